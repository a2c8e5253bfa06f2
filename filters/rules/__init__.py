"""Keep/drop rules on the :class:`filters.rules.base.Filter` contract: ``(failed, reason)`` checks."""

"""Generation: prompt builders and plans (``prompts/``) and the teachers that answer them (``teachers/``).

Nothing here imports ``filters`` or ``pipeline``; both import from here.
"""

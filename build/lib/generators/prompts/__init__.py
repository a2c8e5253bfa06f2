"""What to ask: the plan loop (plan.py), topic lists and seed corpora, and one pure prompt builder per
generator (textbook, rephrase, instruct, dense, layered)."""

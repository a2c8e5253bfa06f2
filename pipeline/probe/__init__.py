"""The student probe: does selecting by a score train a better small model than random text?"""

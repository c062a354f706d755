"""The rules file: its schema, loading it with positions, the checks across it, message
templates, and the pure evaluation of rules against what a check read."""

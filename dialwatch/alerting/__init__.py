"""The alert lifecycle and what happens around it: routing to channels, quiet hours,
silences, inhibition and the decision to notify. Pure: no I/O, no clock."""

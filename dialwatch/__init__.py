"""dialwatch: watches telephony and API billing and alerts through apprise."""

__version__ = "0.1.0"

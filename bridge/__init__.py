"""fax-bridge: send faxes from any mail client, receive faxes in your inbox."""

__version__ = "0.1.0"

"""Settings: TOML file, then `FAX_BRIDGE_<SECTION>__<KEY>` environment overrides, then validation.

The result is immutable and complete, so no other module reads the environment or guesses a
default. Every error names the key and where its value came from, because the person reading it
is an operator at a terminal, not a developer with a debugger.

`settings` declares what can be configured, `loading` makes a `Settings` from the file and the
environment, `output` shows one (masked, as TOML). Import the names from `bridge.config`.
"""

from bridge.config.loading import COMMAND_VARIABLES, ENV_PREFIX, find_config_file, load
from bridge.config.output import masked, secret_values, to_toml
from bridge.config.settings import (
    SECRET,
    ByosokuSettings,
    CoverPage,
    DocumentsSettings,
    FaxmaxSettings,
    HttpSettings,
    InitialSync,
    IPNetwork,
    MailSettings,
    MailTransport,
    NumbersSettings,
    PaperSize,
    PdfMethod,
    ReportToSender,
    Resolution,
    RoutingSettings,
    Settings,
    SmtpSecurity,
    SmtpSettings,
    SmtpUser,
    in_networks,
    parse_listen,
    parse_networks,
)

__all__ = [
    "COMMAND_VARIABLES",
    "ENV_PREFIX",
    "SECRET",
    "ByosokuSettings",
    "CoverPage",
    "DocumentsSettings",
    "FaxmaxSettings",
    "HttpSettings",
    "IPNetwork",
    "InitialSync",
    "MailSettings",
    "MailTransport",
    "NumbersSettings",
    "PaperSize",
    "PdfMethod",
    "ReportToSender",
    "Resolution",
    "RoutingSettings",
    "Settings",
    "SmtpSecurity",
    "SmtpSettings",
    "SmtpUser",
    "find_config_file",
    "in_networks",
    "load",
    "masked",
    "parse_listen",
    "parse_networks",
    "secret_values",
    "to_toml",
]

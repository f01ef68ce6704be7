"""Process configuration: what a mount or a command is configured with, from where.

Modules::

    table        how an option is declared (kind, range, help, aliases) and described
    options      MountOptions: every -o option declared on its field; the -o parser
    docs         docs/CONFIGURATION.md generated from the table (python -m s3fmfs.config.docs)
    credentials  the credentials chain (passwd files, environment, ~/.aws/credentials)
    tls          ca_bundle= / no_check_certificate, and TLS failures in one line
    paths        the cache and state directories (one function each)

Layering: this package may import ``s3fmfs.fs`` and ``s3fmfs.client``; neither imports it. The
fs layer sees a mount's options only as ``MountOptions.fs_settings()`` (``fs.settings``).
"""

from .options import MountOptions, OptionError, parse_options

__all__ = ["MountOptions", "OptionError", "parse_options"]

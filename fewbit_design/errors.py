"""The one exception type the library raises for bad user input (every step)."""


class FewbitError(ValueError):
    """Bad input: an unknown name, a malformed spec, an unreadable file.

    The message is one line that names what is wrong; the CLI prints it and exits 2.
    """

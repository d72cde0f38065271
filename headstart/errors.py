"""The one exception type users see: a message that says what is wrong and what to do."""


class HeadstartError(Exception):
    """A problem with the user's input, config or files, explained in plain words.

    The CLI prints it as a paragraph (no traceback); the Python API lets it propagate.
    """

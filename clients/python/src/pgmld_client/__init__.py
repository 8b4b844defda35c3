"""pgmld's Python client: PostgresML's ``OpenSourceAI`` chat completions, run as
``pgml.transform`` / ``pgml.transform_stream`` SQL over psycopg.

``import pgml`` works too (an alias module shipped with this package), so code written
for PostgresML's SDK (``pgml.OpenSourceAI(database_url).chat_completions_create(...)``)
runs unchanged against pgmld.
"""

from .errors import PgmlError
from .open_source_ai import AsyncChatStream, ChatStream, OpenSourceAI

__all__ = ["OpenSourceAI", "ChatStream", "AsyncChatStream", "PgmlError"]
__version__ = "0.1.0"

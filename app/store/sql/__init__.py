"""The SQL backend: SQLite (the stdlib driver in the store's threads) by default, or any
SQLAlchemy async URL (PostgreSQL via asyncpg). See `database.py` for how calls run."""

from __future__ import annotations

from datetime import datetime

from app.domain.values import utcnow
from app.store.service import StoreService
from app.store.sql.agent_tests import SQLAgentTests, SQLTestRuns
from app.store.sql.analysis import SQLAnalysisQueue
from app.store.sql.calls import SQLCalls, SQLCampaigns
from app.store.sql.configs import SQLConfigs
from app.store.sql.database import SQLDatabase
from app.store.sql.journal import SQLJournal
from app.store.sql.keys import SQLKeys
from app.store.sql.routes import SQLRoutes
from app.store.sql.sessions import SQLLiveness, SQLSessions
from app.store.sql.usage import SQLUsage
from app.store.sql.webhooks import SQLDeliveries, SQLWebhooks


class SQLBackend(SQLDatabase):
    """`app.store.backend.Backend` on SQL: the database plus one repository per concern."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        super().__init__(url, echo=echo)
        self.configs = SQLConfigs(self)
        self.routes = SQLRoutes(self)
        self.sessions = SQLSessions(self)
        self.liveness = SQLLiveness(self)
        self.analysis = SQLAnalysisQueue(self)
        self.usage = SQLUsage(self)
        self.journal = SQLJournal(self)
        self.webhooks = SQLWebhooks(self)
        self.deliveries = SQLDeliveries(self)
        self.keys = SQLKeys(self)
        self.agent_tests = SQLAgentTests(self)
        self.test_runs = SQLTestRuns(self)
        self.calls = SQLCalls(self)
        self.campaigns = SQLCampaigns(self)

    def now(self) -> datetime:
        return utcnow()


class SQLStore(StoreService):
    """`ConfigStore` on an SQL database."""

    def __init__(self, database_url: str, *, echo: bool = False) -> None:
        super().__init__(SQLBackend(database_url, echo=echo))
        self.url = database_url


__all__ = ["SQLBackend", "SQLStore"]

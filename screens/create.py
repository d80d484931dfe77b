"""Create Full / Incremental Restore Point's controller: the form (``create_views``), the
squash behind a progress view, and the result."""

from __future__ import annotations

from maintenance.model import ImageMeta, Kind, ProgressFn

from . import create_views
from .base import ScreenController


class CreateController(ScreenController):
    def create(self, kind: Kind) -> None:
        self.authorized(create_views.TITLES[kind], lambda: self._ask(kind))

    def _ask(self, kind: Kind) -> None:
        status = self.menu.status
        self.host.show(create_views.create_form(
            kind, status.layer if status else None,
            lambda name, desc: self._do_create(kind, name, desc), self.back))

    def _do_create(self, kind: Kind, name: str, description: str) -> None:
        self.host.back()  # the form

        def work(report: ProgressFn) -> ImageMeta:
            meta = self.engine.create(kind, name=name or None, description=description,
                                      progress=report)
            self.engine.reclaim_later()  # the cleared layer's files
            return meta

        def done(meta: ImageMeta) -> None:
            self.host.show(create_views.done_page(kind, meta, self.reload))
        self.work(create_views.working(kind), create_views.NOTE, work, done, mutating=True,
                  on_error=self.menu.pending.or_queue(
                      "full" if kind is Kind.FULL else "incremental", name, description))

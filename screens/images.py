"""The controller of the store's images: Delete restore point... (choose, confirm with
``images_views``, delete) and Verify images."""

from __future__ import annotations

from maintenance.errors import IbiError
from maintenance.model import ImageMeta, ProgressFn, VerifyReport

from .base import Choices, ScreenController
from .images_views import (
    DELETE,
    DELETE_INTRO,
    NOTHING_TO_DELETE,
    VERIFY_NOTE,
    VERIFYING,
    delete_confirm,
    deleted_page,
    deleting,
    verified_page,
)
from .views import READING_STORE, Dialog, PickerView


class ImagesController(ScreenController):
    # ------------------------------------------------------------------ Delete
    def delete(self) -> None:
        self.authorized(DELETE, self._delete)

    def _delete(self) -> None:
        def shown(res: Choices) -> None:
            choices, _tab = res
            if not choices:
                self.host.dialog(Dialog(DELETE, NOTHING_TO_DELETE, self.host.close_dialog))
                return
            self.host.show(PickerView(DELETE, DELETE_INTRO, choices, self._confirm_delete,
                                      self.back))
        self.work(READING_STORE, "",
                  self.choices(lambda m, tab: m.name in tab
                               or self.engine.delete_blocker(m.name) is not None), shown)

    def _confirm_delete(self, name: str) -> None:
        def work(_r: ProgressFn) -> ImageMeta:
            for m in self.engine.images():
                if m.name == name:
                    return m
            raise IbiError(f"no image named {name!r} in the store")

        def shown(m: ImageMeta) -> None:
            self.host.show(delete_confirm(m, lambda: self._do_delete(name, m.size),
                                          self.back))
        self.work(READING_STORE, "", work, shown)

    def _do_delete(self, name: str, size: int) -> None:
        self.host.back()  # confirmation
        self.host.back()  # picker
        self.work(deleting(name), "", lambda _r: self.engine.delete(name),
                  lambda _res: self.host.show(deleted_page(name, size, self.reload)),
                  mutating=True)

    # ------------------------------------------------------------------ Verify
    def verify(self) -> None:
        def done(report: VerifyReport) -> None:
            self.host.show(verified_page(report, self.back))
        self.work(VERIFYING, VERIFY_NOTE,
                  lambda report: self.engine.verify(all_images=True, progress=report), done)


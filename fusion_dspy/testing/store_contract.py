"""The contract every :class:`~fusion_dspy.store.CandidateStore` keeps, as a reusable pytest suite.

Subclass :class:`CandidateStoreContract` in a test module, name the subclass ``Test...`` and
implement :meth:`~CandidateStoreContract.make_store`; pytest then runs every contract test
against your store. Persistent stores also implement :meth:`~CandidateStoreContract.reopen`
(a second handle on the same data, as a new process would open it) and, if they can be torn by a
kill, :meth:`~CandidateStoreContract.tear_tail`; tests that need a hook you did not implement are
skipped. Example::

    # tests/test_my_store.py
    from fusion_dspy.testing import CandidateStoreContract

    class TestSqliteStore(CandidateStoreContract):
        def make_store(self, path):
            return SqliteStore(path / "bank.db")

        def reopen(self, store, path):
            return SqliteStore(path / "bank.db")

The suite checks: lookups and round trips (answers, parse failures, usage, latency), thread
safety, single flight for :class:`~fusion_dspy.store.ClaimingStore` implementations (claims,
waits, timeouts, and concurrent ``Fuse`` calls generating each draw once), replay after reopening
(no teacher is asked again, failures included), a torn write losing only itself, and pickling
(``program.save(..., save_program=True)``). Tests use :class:`~fusion_dspy.testing.FakeEngine`
only: no network, no model.
"""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path
from typing import Any

from fusion_dspy.report import TokenUsage
from fusion_dspy.store import CandidateStore
from fusion_dspy.store import ClaimingStore
from fusion_dspy.store import StoredDraw

__all__ = ["CandidateStoreContract"]

_USAGE = {"local/t": TokenUsage(input_tokens=12, output_tokens=3, calls=1)}


def _skip(reason: str) -> None:
    import pytest

    pytest.skip(reason)


class CandidateStoreContract:
    """Contract tests for a candidate store; subclass it as ``Test<YourStore>`` (see the module docstring).

    Attributes:
        picklable: Whether the store must survive ``pickle`` (``save_program=True``). Set ``False``
            for a store that holds a connection you re-create yourself on load.
    """

    picklable: bool = True

    # -- hooks -------------------------------------------------------------------------------------

    def make_store(self, path: Path) -> CandidateStore:
        """A new, empty store; ``path`` is an empty directory it may keep its data in."""
        raise NotImplementedError("Implement make_store(self, path) to return a new, empty store.")

    def reopen(self, store: CandidateStore, path: Path) -> CandidateStore | None:
        """A second handle on ``store``'s data, as another process would open it (``None``: not persistent)."""
        return None

    def tear_tail(self, store: CandidateStore, path: Path) -> bool:
        """Leave the data as a kill in the middle of a write would (``False``: cannot happen)."""
        return False

    # -- helpers -----------------------------------------------------------------------------------

    def _store(self, tmp_path: Path) -> CandidateStore:
        directory = tmp_path / "store"
        directory.mkdir(exist_ok=True)
        return self.make_store(directory)

    def _reopened(self, store: CandidateStore, tmp_path: Path) -> CandidateStore:
        again = self.reopen(store, tmp_path / "store")
        if again is None:
            _skip("the store is not persistent (reopen() returns None)")
        return again

    def _claiming(self, tmp_path: Path) -> ClaimingStore:
        store = self._store(tmp_path)
        if not isinstance(store, ClaimingStore):
            _skip("the store has no single-flight claims (not a ClaimingStore)")
        return store

    @staticmethod
    def _fuse(store: CandidateStore, engines: list[Any], *, n: int = 3) -> Any:
        from fusion_dspy import Fuse
        from fusion_dspy import Teacher

        teachers = [Teacher(engine.lm(), name=engine.name) for engine in engines]
        return Fuse("question -> answer", n, teachers=teachers, mode="select", selector="mbr", store=store)

    # -- lookups and round trips -------------------------------------------------------------------

    def test_a_missing_key_is_none(self, tmp_path: Path) -> None:
        assert self._store(tmp_path).get("never-stored") is None

    def test_answers_and_failures_round_trip(self, tmp_path: Path) -> None:
        store = self._store(tmp_path)
        answer = StoredDraw(outputs={"answer": "Paris", "n": 3, "tags": ["a", "ü"]}, usage=_USAGE, latency_s=0.25)
        failure = StoredDraw(
            outputs=None, usage=_USAGE, latency_s=0.5, error="no fields", error_type="AdapterParseError"
        )
        store.put("answer", answer)
        store.put("failure", failure)
        handles = [store]
        again = self.reopen(store, tmp_path / "store")
        if again is not None:
            handles.append(again)
        for handle in handles:
            assert handle.get("answer") == answer, f"{type(handle).__name__} changed a stored answer"
            got = handle.get("failure")
            assert got == failure and not got.ok, f"{type(handle).__name__} changed a stored failure"

    def test_the_last_put_of_a_key_wins(self, tmp_path: Path) -> None:
        store = self._store(tmp_path)
        store.put("k", StoredDraw(outputs={"answer": "old"}, usage={}))
        store.put("k", StoredDraw(outputs={"answer": "new"}, usage={}))
        assert store.get("k").outputs == {"answer": "new"}
        again = self.reopen(store, tmp_path / "store")
        if again is not None:
            assert again.get("k").outputs == {"answer": "new"}, "a reopened store must keep the last put"

    def test_concurrent_puts_are_all_kept(self, tmp_path: Path) -> None:
        store = self._store(tmp_path)

        def put_many(worker: int) -> None:
            for i in range(25):
                store.put(f"{worker}:{i}", StoredDraw(outputs={"answer": f"{worker}-{i}"}, usage=_USAGE))

        threads = [threading.Thread(target=put_many, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        missing = [f"{w}:{i}" for w in range(8) for i in range(25) if store.get(f"{w}:{i}") is None]
        assert not missing, f"{len(missing)} of 200 concurrent puts were lost"

    # -- single flight -----------------------------------------------------------------------------

    def test_the_first_claim_wins_and_a_stored_key_is_never_claimed(self, tmp_path: Path) -> None:
        store = self._claiming(tmp_path)
        assert store.claim("k") is True
        assert store.claim("k") is False, "a second claim of an in-flight key must lose"
        store.put("k", StoredDraw(outputs={"answer": "x"}, usage={}))
        store.release("k")
        assert store.claim("k") is False, "a stored key must not be generated again"
        store.release("never-claimed")  # harmless

    @staticmethod
    def _wait_while(store: ClaimingStore, generate: Any) -> StoredDraw | None:
        """Claim ``k``, start a waiter for it, run ``generate()`` (the claimant's work), return what the waiter got."""
        assert store.claim("k")
        got: list[StoredDraw | None] = []
        waiter = threading.Thread(target=lambda: got.append(store.wait("k", timeout=10)))
        waiter.start()
        time.sleep(0.05)
        generate()
        store.release("k")
        waiter.join(10)
        assert len(got) == 1, "wait() did not return after release()"
        return got[0]

    def test_a_waiter_gets_the_draw_once_its_generator_is_done(self, tmp_path: Path) -> None:
        store = self._claiming(tmp_path)
        draw = StoredDraw(outputs={"answer": "x"}, usage=_USAGE)
        assert self._wait_while(store, lambda: store.put("k", draw)) == draw

    def test_a_waiter_gets_none_when_the_generator_fails(self, tmp_path: Path) -> None:
        store = self._claiming(tmp_path)
        assert self._wait_while(store, lambda: None) is None  # failed: nothing stored
        assert store.claim("k") is True, "after a failure the next call must be able to generate the draw"
        store.release("k")

    def test_wait_on_a_hung_generator_times_out(self, tmp_path: Path) -> None:
        store = self._claiming(tmp_path)
        assert store.claim("k")
        started = time.monotonic()
        assert store.wait("k", timeout=0.1) is None
        assert time.monotonic() - started < 5, "wait(timeout=0.1) must return soon after its timeout"
        store.release("k")

    def test_concurrent_fuse_calls_generate_each_draw_once(self, tmp_path: Path) -> None:
        from fusion_dspy.testing.fake_lm import FakeEngine

        store = self._claiming(tmp_path)
        engines = [FakeEngine(name=f"t{i}", delay=0.1, responder=lambda r, i=i: {"answer": f"a{i}-{r.seed}"})
                   for i in range(2)]
        fuse = self._fuse(store, engines, n=4)
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(fuse(question="q"))) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(results) == 6
        calls = sum(engine.calls for engine in engines)
        assert calls == 4, f"6 concurrent calls of one n=4 plan made {calls} teacher calls; single flight allows 4"
        answers = {tuple(c.outputs["answer"] for c in r.fusion.candidates) for r in results}
        assert len(answers) == 1, "every concurrent call must see the same candidates"

    # -- replay ------------------------------------------------------------------------------------

    def test_a_reopened_store_replays_every_draw_without_calling_a_teacher(self, tmp_path: Path) -> None:
        from fusion_dspy.testing.fake_lm import FakeEngine

        store = self._store(tmp_path)
        good = FakeEngine(name="good", responder=lambda r: {"answer": f"good-{r.seed}"})
        junk = FakeEngine(name="junk", garbage=True)
        first = self._fuse(store, [good, junk])(question="q")
        reopened = self._reopened(store, tmp_path)
        before = good.calls + junk.calls
        second = self._fuse(reopened, [good, junk])(question="q")
        assert good.calls + junk.calls == before, "a replay must not call any teacher"
        assert [(c.outputs, c.error_type) for c in second.fusion.candidates] == [
            (c.outputs, c.error_type) for c in first.fusion.candidates], "a replay must give the same candidates"
        assert any(c.error_type == "AdapterParseError" for c in second.fusion.candidates), \
            "a malformed answer must be replayed as the same failure"
        assert all(c.cached for c in second.fusion.candidates)
        assert [c.usage for c in second.fusion.candidates] == [c.usage for c in first.fusion.candidates], \
            "a replayed draw keeps the usage of the original call"

    def test_a_torn_write_loses_only_itself(self, tmp_path: Path) -> None:
        store = self._store(tmp_path)
        for i in range(3):
            store.put(f"k{i}", StoredDraw(outputs={"answer": i}, usage=_USAGE))
        if not self.tear_tail(store, tmp_path / "store"):
            _skip("the store cannot be torn (tear_tail() returns False)")
        reopened = self._reopened(store, tmp_path)
        assert [reopened.get(f"k{i}").outputs for i in range(3)] == [{"answer": i} for i in range(3)]
        reopened.put("after", StoredDraw(outputs={"answer": "after"}, usage={}))
        again = self._reopened(reopened, tmp_path)
        assert again.get("after") is not None, "a put after a torn write must not be lost"
        assert [again.get(f"k{i}").outputs for i in range(3)] == [{"answer": i} for i in range(3)]

    # -- pickling ----------------------------------------------------------------------------------

    def test_a_pickled_store_works(self, tmp_path: Path) -> None:
        if not self.picklable:
            _skip("the store declares picklable = False")
        store = self._store(tmp_path)
        draw = StoredDraw(outputs={"answer": "x"}, usage=_USAGE)
        store.put("k", draw)
        if isinstance(store, ClaimingStore):
            store.claim("in-flight")  # claims belong to this process; they must not travel
        copy = pickle.loads(pickle.dumps(store))
        assert copy.get("k") == draw
        copy.put("k2", draw)
        assert copy.get("k2") == draw
        if isinstance(copy, ClaimingStore):
            assert copy.claim("in-flight") is True
            copy.release("in-flight")

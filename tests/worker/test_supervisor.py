"""The supervisor reconciles the ledger with the broker while the service runs: lost messages, due retries,
orphaned studies and waiting deliveries are published again without an operator; stuck work is reported with why.
Real Redis (a database of these tests), real SQLite ledger."""
from __future__ import annotations

import json
import time

import redis as redis_lib

from tests.worker.conftest import make_settings
from worker.app import make_celery, publish_study, ready_study_uids
from worker.assembler import Assembler
from worker.health import HealthServer
from worker.ledger import DEAD_LETTERED, FAILED, QUEUED, Ledger
from worker.supervisor import Supervisor, stuck_studies


def _queued_study(settings, ledger, app, uid: str) -> None:
    ledger.record_instance(uid, uid + ".1", "/p", now=1.0)
    publish = lambda u, q, m: publish_study(app, u, queue=q, model_dir=m)  # noqa: E731
    assert Assembler(ledger, publish, settings.study_idle_s).tick(now=time.time() + 5) == [uid]
    assert ledger.get(uid).state == QUEUED


def _supervisor(settings, ledger, app, **kwargs) -> Supervisor:
    return Supervisor(settings, ledger, lambda u, q, m: publish_study(app, u, queue=q, model_dir=m),
                      lambda: ready_study_uids(app), **kwargs)


def test_a_queued_study_whose_message_vanished_is_published_again(tmp_path, redis_url):
    """Redis restarted without persistence: the study stayed ``queued`` with no message anywhere."""
    settings = make_settings(tmp_path, broker_url=redis_url, supervise_interval_s=0.5)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    _queued_study(settings, ledger, app, "1.5.1")
    assert ready_study_uids(app) == {"1.5.1"}
    redis_lib.Redis.from_url(redis_url).flushdb()  # what a restart without persistence leaves
    assert ready_study_uids(app) == set()
    supervisor = _supervisor(settings, ledger, app)
    assert supervisor.tick(now=time.time()).lost == []  # too recent: a worker may be taking it right now
    report = supervisor.tick(now=time.time() + supervisor.lost_after_s + 1)
    assert report.lost == ["1.5.1"] and ready_study_uids(app) == {"1.5.1"}
    assert ledger.get("1.5.1").state == QUEUED
    # a message still waiting is not published twice
    assert supervisor.tick(now=time.time() + supervisor.lost_after_s + 1).lost == []
    assert redis_lib.Redis.from_url(redis_url).llen("interactive") == 1


def test_due_retries_are_published_and_waiting_ones_are_not(tmp_path, redis_url):
    settings = make_settings(tmp_path, broker_url=redis_url)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    for uid, delay in (("1.5.2", -1.0), ("1.5.3", 3600.0)):
        _queued_study(settings, ledger, app, uid)
        ledger.claim(uid, max_attempts=3, worker="w/1")
        ledger.fail(uid, "boom", dead=False, retry_at=time.time() + delay)
    redis_lib.Redis.from_url(redis_url).flushdb()
    report = _supervisor(settings, ledger, app).tick()
    assert report.retried == ["1.5.2"] and ready_study_uids(app) == {"1.5.2"}
    assert ledger.get("1.5.2").state == QUEUED and ledger.get("1.5.3").state == FAILED


def test_a_study_whose_worker_is_gone_is_published_again_and_a_live_one_is_left(tmp_path, redis_url):
    settings = make_settings(tmp_path, broker_url=redis_url, worker_stale_s=30)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    for uid, worker in (("1.5.4", "otherhost/1"), ("1.5.5", "otherhost/2")):
        _queued_study(settings, ledger, app, uid)
        ledger.claim(uid, max_attempts=3, worker=worker)
    redis_lib.Redis.from_url(redis_url).flushdb()  # the messages are held by the workers, not waiting
    supervisor = _supervisor(settings, ledger, app)
    later = time.time() + 60
    ledger.heartbeat("otherhost/2", now=later)  # still beating; otherhost/1 stopped 60 s ago
    report = supervisor.tick(now=later)
    assert report.orphaned == ["1.5.4"] and ready_study_uids(app) == {"1.5.4"}
    stuck = {s.study_uid: s for s in stuck_studies(ledger, settings.model_copy(update={"stuck_after_s": 10}),
                                                  now=later)}
    assert "1.5.5" not in stuck and "gone" in stuck["1.5.4"].why


def test_waiting_deliveries_become_due_when_the_destinations_answer(tmp_path, redis_url):
    settings = make_settings(tmp_path, broker_url=redis_url)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    _queued_study(settings, ledger, app, "1.5.6")
    ledger.claim("1.5.6", max_attempts=3, worker="w/1")
    ledger.mark_sending("1.5.6")
    state, retry_at = ledger.fail_delivery("1.5.6", "PACS down", horizon_s=3600, backoff_s=600, backoff_max_s=600)
    assert state == FAILED and retry_at > time.time() + 500
    up = [False]
    supervisor = _supervisor(settings, ledger, app, destinations_up=lambda: up[0])
    assert supervisor.tick().retried == []
    up[0] = True
    supervisor._next_probe = 0.0
    assert supervisor.tick().destinations_back == ["1.5.6"]
    assert supervisor.tick().retried == ["1.5.6"] and ledger.get("1.5.6").state == QUEUED


def test_delivery_backs_off_exponentially_spends_no_attempt_and_dead_letters_after_the_horizon(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    ledger.record_instance("1.5.7", "1.5.7.1", "/p", now=1.0)
    ledger.mark_complete("1.5.7", cutoff=5.0)
    t0, waits = 1000.0, []
    for n in range(6):
        claim = ledger.claim("1.5.7", max_attempts=1, worker="w/1")
        assert claim.action == "run" and claim.attempt == 1  # deliveries never spend the single attempt
        ledger.mark_sending("1.5.7")
        now = t0 + 10.0 * n
        state, retry_at = ledger.fail_delivery("1.5.7", "refused", horizon_s=45, backoff_s=2, backoff_max_s=20,
                                               now=now)
        if state == DEAD_LETTERED:
            break
        waits.append(retry_at - now)
    assert waits == [2, 4, 8, 16, 20]
    record = ledger.get("1.5.7")
    assert state == DEAD_LETTERED and "delivery_horizon_s=45" in record.reason and "refused" in record.reason


def test_healthz_is_degraded_with_the_reason_while_a_study_is_stuck(tmp_path):
    from urllib.request import urlopen

    from prometheus_client import CollectorRegistry

    settings = make_settings(tmp_path, stuck_after_s=5)
    ledger = Ledger(settings.effective_ledger_url)
    ledger.record_instance("1.5.8", "1.5.8.1", "/p", now=1.0)
    ledger.mark_complete("1.5.8", cutoff=5.0)
    ledger.mark_queued("1.5.8")
    server = HealthServer("127.0.0.1", 0, {"ledger": ledger.ping}, CollectorRegistry(),
                          degraded=lambda: [s.why for s in stuck_studies(ledger, settings, now=time.time() + 10)])
    server.start()
    try:
        with urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as rsp:
            code, body = rsp.status, json.loads(rsp.read())
        # 200: the stuck studies come from the ledger every host shares, so a 503 would take every host out of the
        # load balancer at once and the site would stop receiving; monitoring reads the status in the body
        assert code == 200
        assert body["status"] == "degraded" and "no worker has taken it" in body["reasons"][0]
        ledger.claim("1.5.8", max_attempts=3, worker="w/1")
        with urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as rsp:
            assert json.loads(rsp.read())["status"] == "ok"
    finally:
        server.stop()


def test_the_embedded_broker_is_read_too(tmp_path):
    settings = make_settings(tmp_path)  # no broker_url: kombu's SQLAlchemy transport on SQLite
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    assert ready_study_uids(app) == set()
    _queued_study(settings, ledger, app, "1.5.9")
    assert ready_study_uids(app) == {"1.5.9"}

"""vLLM replicas on a real two-node Ray cluster (a head and a second raylet on loopback), in the vLLM environment.

``run_batch(..., inference_engine_options={"engine": "vllm", "address": ...}, job_spec=JobSpec(replicas=2))``
runs one vLLM engine per replica as a Ray Data actor; each node has room for one, so the two replicas run on
the two nodes. The parts, ``_SUCCESS`` and resume are those of every job, and the rows equal transformers'.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import transformers

from duckreg.batch import InputSpec, JobSpec, OutputSpec

ray = pytest.importorskip("ray", reason="needs Ray (the vLLM environment of scripts/test installs it)")
pytest.importorskip("vllm", reason="needs vLLM (the vLLM environment of scripts/test)")

ENGINE_ARGS = {"max_model_len": 512, "enforce_eager": True}
ACTOR_CPUS = "0.75"  # of each node's one CPU: one replica per node, and room left for Ray Data's own tasks
GREEDY = InputSpec(params={"temperature": 0.0, "max_completion_tokens": 24})


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    yield nodes
    from duckreg import jobs

    jobs.stop_background_jobs()  # a job left running by a failed test would reconnect the driver
    ray.shutdown()
    nodes.shutdown()


def _conversation(i: int) -> str:
    return json.dumps([{"role": "user", "content": [{"type": "text", "text": f"How many breeds of cats? Ask {i}."}]}])


def _texts(folder: Path) -> list[str]:
    frame = pq.read_table(folder).to_pandas().sort_values("i")
    return [choices[0]["message"]["content"] for choices in frame["choices"]]


def _replica_processes() -> list:
    """The processes of the job's Ray Data actors (``ray::_MapWorker``), each a child of its node's raylet."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "ppid"]):
        line = " ".join(process.info["cmdline"] or [])
        if line.startswith("ray::") and ("_MapWorker" in line or "_RayPartWriter" in line):
            found.append(process)
    return found


def test_two_vllm_replicas_on_two_nodes_write_the_rows_of_the_local_engine(
    cluster, registry, model_dirs, tmp_path: Path
) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["qwen2-chat"]))
    mv = registry.log_model(pipe, model_name="qwen", version_name="v1")
    registry.create_stage("out", str(tmp_path / "out"))
    frame = pd.DataFrame({"i": range(24), "messages": [_conversation(i) for i in range(24)]})
    options = {"engine": "vllm", "address": cluster.address, "engine_args_override": ENGINE_ARGS}
    spec = {"replicas": 2, "cpu_requests": ACTOR_CPUS, "max_batch_rows": 1, "job_name": "replicas"}
    out = tmp_path / "out" / "ray"
    deadline = time.monotonic() + 600

    def start() -> object:
        return mv.run_batch(frame, output_spec=OutputSpec("@out/ray/"), input_spec=GREEDY,
                            job_spec=JobSpec(**spec), inference_engine_options=options)  # fmt: skip

    def parts() -> int:
        return len(list(out.glob("part-*.parquet")))

    def wait_for(condition, job) -> None:
        while not condition():
            assert time.monotonic() < deadline, job.message
            time.sleep(0.1)

    job = start()
    wait_for(lambda: parts() >= 1, job)
    job.cancel()  # stopped after the parts running now
    assert job.status == "CANCELLED" and not (out / "_SUCCESS").exists()
    written = parts()
    assert 1 <= written < 24
    resumed = start()
    wait_for(lambda: parts() > written and len(_replica_processes()) == 2, resumed)
    replicas = _replica_processes()
    assert len({p.info["ppid"] for p in replicas}) == 2, replicas  # one replica under each node's raylet
    os.kill(replicas[0].pid, signal.SIGKILL)  # a replica's worker dies mid-job: Ray restarts it, retries its part
    wait_for(lambda: resumed.status not in ("PENDING", "RUNNING", "CANCELLING"), resumed)
    assert resumed.status == "DONE", (resumed.message, resumed.get_logs())
    logs = resumed.get_logs()
    assert "resuming on Ray on the vllm engine: 24 rows" in logs and "on 2 actor(s)" in logs
    assert (out / "_SUCCESS").exists() and parts() == 24
    local = mv.run_batch(frame, output_spec=OutputSpec("@out/local/"), input_spec=GREEDY, job_spec=JobSpec(block=True))
    assert local.status == "DONE"
    assert _texts(out) == _texts(tmp_path / "out" / "local")

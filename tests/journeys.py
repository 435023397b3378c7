"""What the journey tests share: the toy user dataset, its gold labels, a Claude sweep config."""

from __future__ import annotations

from pathlib import Path

from conftest import FIXTURES

SENTINEL_KEY = "sk-ant-SENTINEL-journeys-0c4d"
USERDATA = FIXTURES / "userdata"


def gold() -> tuple[dict[str, set[str]], list[str]]:
    """(relevant texts per query, query texts) of the toy user dataset."""
    from evaluations.registry import load_benchmark

    bench = load_benchmark(f"files:{USERDATA}")
    return bench.relevant_texts(), bench.query_texts()


def claude_config(path: Path, base_url: str, name: str, lrs: str = "[0.01, 0.001]") -> Path:
    """A sweep config with a listwise Claude judge at ``base_url`` on the toy dataset."""
    path.write_text(
        f"name: {name}\n"
        f"benchmarks:\n  - name: files:{USERDATA}\n"
        f"judges:\n  - {{kind: anthropic, scheme: listwise, base_url: '{base_url}', max_retries: 0, concurrency: 2}}\n"
        f"grid:\n  lr: {lrs}\n  k: [5]\n"
    )
    return path


def port_closed(port: int) -> bool:
    """Nothing listens on 127.0.0.1:``port``."""
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0

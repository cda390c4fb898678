"""Device sampling for the sweep benchmark: every device's utilisation and memory every `period` s on a background
thread, from NVML (pynvml), else `nvidia-smi -lms`, else the CPU cores (/proc/stat) when there is no GPU.
"""
import shutil
import subprocess
import threading
import time
from pathlib import Path


class Sampler:
    """Samples (unix time s, device index, utilisation %, memory used MiB) of every device every `period` s on a
    background thread: NVML (pynvml), else `nvidia-smi -lms`, else the CPU cores (/proc/stat, with the
    machine's used memory) when there is no GPU. `names` are the devices' names, `backend` the source."""

    def __init__(self, period: float = 0.2, prefer_cpu: bool = False):
        self.period, self.rows, self.names, self.backend = period, [], [], "none"
        self.fallback_reason, self.errors = "", 0
        self._stop, self._thread, self._proc = threading.Event(), None, None
        self._open(prefer_cpu)

    def _open(self, prefer_cpu: bool) -> None:
        if not prefer_cpu:
            if self._open_nvml():
                return
            if shutil.which("nvidia-smi"):
                out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                     check=False, capture_output=True, text=True, timeout=30)
                if out.returncode == 0 and out.stdout.strip():
                    self.names, self.backend = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()], "nvidia-smi"
                    return
        if Path("/proc/stat").is_file():
            self.names = [f"cpu{i}" for i in range(len(_cpu_times()))]
            self.backend = "proc-stat (no GPU: CPU cores)"

    def _open_nvml(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            names = [_text(pynvml.nvmlDeviceGetName(h)) for h in handles]
        except Exception as err:  # noqa: BLE001 - no pynvml or no driver: try nvidia-smi
            self.fallback_reason = f"NVML: {type(err).__name__}: {err}"
            return False
        self._nvml, self._handles, self.names, self.backend = pynvml, handles, names, "nvml"
        return True

    def start(self) -> "Sampler":
        target = {"nvml": self._loop_nvml, "nvidia-smi": self._loop_smi}.get(self.backend, self._loop_cpu)
        if self.backend == "nvidia-smi":  # started here, so that stop() always finds it
            cmd = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                   "-lms", str(int(self.period * 1000))]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if self.backend != "none":
            self._thread = threading.Thread(target=target, name="device-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop_nvml(self) -> None:
        nv = self._nvml
        while not self._stop.is_set():
            now = time.time()
            for i, h in enumerate(self._handles):
                try:
                    util, mem = nv.nvmlDeviceGetUtilizationRates(h).gpu, nv.nvmlDeviceGetMemoryInfo(h).used
                    self.rows.append((now, i, float(util), mem / 2**20))
                except Exception:  # noqa: BLE001 - a transient NVML error loses one sample, not the series
                    self.errors += 1
            self._stop.wait(self.period)

    def _loop_smi(self) -> None:
        for line in self._proc.stdout:
            if self._stop.is_set():
                break
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and all(p.replace(".", "").isdigit() for p in parts):
                self.rows.append((time.time(), int(parts[0]), float(parts[1]), float(parts[2])))

    def _loop_cpu(self) -> None:
        prev = _cpu_times()
        while not self._stop.wait(self.period):
            now, cur, mem = time.time(), _cpu_times(), _used_memory_mib()
            for i, (a, b) in enumerate(zip(prev, cur)):
                busy, total = (b[0] - a[0]), (b[1] - a[1])
                self.rows.append((now, i, 100.0 * busy / total if total else 0.0, mem))
            prev = cur

    def mean_util(self, t0: float, t1: float) -> dict[int, float]:
        """Mean utilisation % of each device over samples in [t0, t1] (unix s)."""
        out: dict[int, list[float]] = {}
        for t, dev, util, _ in self.rows:
            if t0 <= t <= t1:
                out.setdefault(dev, []).append(util)
        return {dev: sum(v) / len(v) for dev, v in sorted(out.items())}


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _cpu_times() -> list[tuple[int, int]]:
    """(busy jiffies, total jiffies) of each CPU core since boot, from /proc/stat."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            vals = [int(v) for v in line.split()[1:]]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            out.append((sum(vals) - idle, sum(vals)))
    return out


def _used_memory_mib() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    total, available = (float(info.get(key, "0 kB").split()[0]) for key in ("MemTotal", "MemAvailable"))
    return (total - available) / 1024

"""Run the numbered notebooks headless with papermill and collect them under reports/notebooks/."""
from __future__ import annotations

import os
import time
from pathlib import Path

from tqdm.auto import tqdm

from .report import reports_dir, update_readme
from .utils import REPO_ROOT

PROFILES = ("smoke", "cpu", "full")


class NotebookFailed(RuntimeError):
    """A notebook failed: names the notebook, the cell and the error."""


def numbered_notebooks(folder: Path = REPO_ROOT / "notebooks") -> list[Path]:
    """The notebooks `NN_name.ipynb` in run order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def run_notebooks(profile: str = "cpu", notebooks: list[Path] | None = None, out_dir: Path | None = None,
                  parameters: dict | None = None, progress: bool = True, readme: bool | None = None,
                  train_first: bool | None = None, data=None) -> list[Path]:
    """Execute each notebook with papermill (parameters: profile + extras) and return the executed copies.

    data: a folder laid out like the kit's real-data root (tcm_kit.data.benchmarks): passed as the `data`
    parameter to each notebook that declares one; each benchmark split found adds that notebook's real rows, each
    one absent is named in a one-line note.

    train_first: train the Plan's runs of notebooks 02-06 in one pool before the notebooks (runs.train_plan),
    which then read them back; default: when all the numbered notebooks run with no parameters but the profile
    (so the notebooks' Plan is Plan.for_profile(profile), seed 0).

    readme: copy the headline tables into README.md's results block afterwards (report.update_readme); default:
    when the whole cpu profile ran into the repository's reports/.

    Stops at the first failing notebook with its cell and error. Tables and figures are written by the
    notebooks themselves (through tcm_kit.report), so nothing is written that no run produced.
    """
    import papermill as pm

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    notebooks = numbered_notebooks() if notebooks is None else [Path(p) for p in notebooks]
    out_dir = Path(out_dir or REPO_ROOT / "reports" / "notebooks")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not notebooks:
        print("no numbered notebooks found in notebooks/: nothing to run")
        return []
    params = {"profile": profile, **(parameters or {})}
    if data is not None:
        from .data.benchmarks import find_benchmarks

        data = str(Path(data).expanduser().resolve())
        found, notes = find_benchmarks(data)
        for line in notes:
            tqdm.write(line)
        tqdm.write(f"real data: {', '.join(found) or 'none of the known benchmarks'} in {data}")
    if train_first is None:
        train_first = not parameters and notebooks == numbered_notebooks()
    if train_first:
        from .experiments import Plan
        from .runs import train_plan

        t0 = time.time()
        train_plan(Plan.for_profile(profile), progress=progress)
        tqdm.write(f"the Plan's runs: done in {time.time() - t0:.0f} s")
    executed = []
    bar = tqdm(notebooks, desc=f"reproduce [{profile}]", unit="notebook", disable=not progress)
    for nb in bar:
        bar.set_postfix_str(nb.name)
        target = out_dir / nb.name
        t0 = time.time()
        own = params if data is None or "data" not in pm.inspect_notebook(str(nb)) else {**params, "data": data}
        try:
            pm.execute_notebook(str(nb), str(target), parameters=own, cwd=str(nb.parent),
                                progress_bar=False, kernel_name="python3",
                                log_output=bool(os.environ.get("TCM_KIT_LOG_NOTEBOOKS")))
        except pm.PapermillExecutionError as e:
            raise NotebookFailed(f"{nb.name}: cell {e.exec_count} failed: {e.ename}: {e.evalue}\n"
                                 f"(executed copy with the traceback: {target})") from None
        tqdm.write(f"{nb.name}: done in {time.time() - t0:.0f} s -> {target}")
        executed.append(target)
    if readme is None:  # the README's headline is the cpu profile's, from the repository's own reports/
        readme = profile == "cpu" and len(executed) == len(numbered_notebooks()) and \
            reports_dir().resolve() == (REPO_ROOT / "reports").resolve()
    if readme:
        found = update_readme()
        tqdm.write(f"README.md results block: {', '.join(found) or 'no reports found'}")
    return executed

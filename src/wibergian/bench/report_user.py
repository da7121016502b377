"""``docs/benchmarks.md``'s issue-14 section: the user's plain PyTorch energy with every
default, against the anchors of the same run (nothing here measures anything)."""

from __future__ import annotations

from typing import Any

from .report import JAX_LIBS, MALLOC, _load, _verdict

USER = "ours (user's energy)"
USER_C = "ours (user's energy, compile=True)"
USER_E = "ours (user's energy, compile=False)"


def user_targets_section(run: dict[str, Any]) -> str:
    """Issue 14: the plain user energy with every default against Optimistix, unrolled
    autograd, (W2) autograd through Cholesky / solve and the fastest JAX method, (W3) ours, and
    (compile=True) the hand-derived W1 energy, under each allocator setting."""
    rows = ["## Targets (issue 14): the user's energy, every default", "",
            "Headline: **glibc's default malloc** (what a user's process has); the tuned setting "
            "is the one the issue-3 rows use. Each row compares figures of the same run "
            "(interleaved, one thread each). \"ours (user's energy)\" is `argmin`'s default, "
            "`compile='auto'`, timed in its steady state: after its eager warm-up calls (the "
            "row's detail says how many) it runs compiled, as a jit-compiled anchor does after "
            "its first call; its first compiled call (compilation included) is the "
            "\"first call\" column above. `compile=False` is the eager path those warm-up calls "
            "take.", "",
            "| target | figures | verdict |", "|---|---|---|"]
    loads = []
    for w in run["workloads"]:
        ms = w["methods"]
        if USER not in ms:
            continue
        lb, la = w.get("load_before"), w.get("load_after")
        if lb is not None and la is not None:
            loads.append(f"{w['label']} [{w.get('malloc', 'tuned')}]: {_load(lb)} → {_load(la)}")
        tag = f"{w['label']} [{MALLOC.get(w.get('malloc', 'tuned'), w.get('malloc'))}]"
        for name in (USER, USER_C, USER_E):
            u = ms.get(name)
            if u is None:
                continue
            ox = ms.get("optimistix Newton")
            if ox:
                r = u["total_s"] / ox["total_s"]
                ec = u.get("eager_calls_before_compiling")
                how = f" (compiled after {ec} eager calls)" if ec is not None else ""
                rows.append(f"| {tag}: {name}{how} / Optimistix ≤ 1.0 | {u['total_s']:.4f} vs "
                            f"{ox['total_s']:.4f} s = {r:.2f} | {_verdict(r <= 1.0)} |")
            jo = ms.get("jaxopt ridge-CG")
            if jo and w["workload"] == "D":
                r = u["total_s"] / jo["total_s"]
                rows.append(f"| {tag}: {name} / JAXopt (informative) | {r:.2f} | — |")
            unrolled = [un for un in ms if un.startswith("torch unrolled")]
            for un in unrolled:
                ur = ms[un]
                rows.append(f"| {tag}: {name} faster than {un} | {u['total_s']:.4f} vs "
                            f"{ur['total_s']:.4f} s | {_verdict(u['total_s'] < ur['total_s'])} |")
            if not unrolled and w.get("workload") == "D":
                rows.append(f"| {tag}: {name} faster than torch unrolled | not run: its "
                            "retained graph would exceed 4 GiB (`bench.user.unrolled_bytes`) "
                            "| — |")
            rows += _w2_w3_user_rows(w, tag, name, u)
        hand, c = ms.get("ours (stops when converged)"), ms.get(USER_C)
        if hand and c:
            r = c["total_s"] / hand["total_s"]
            rows.append(f"| {tag}: compile=True within 10 % of the hand-derived energy (ours, "
                        f"stops when converged) | {c['total_s']:.4f} vs {hand['total_s']:.4f} s "
                        f"= {r:.2f} | {_verdict(r <= 1.1)} |")
    if loads:
        rows += ["", "Machine load (1-minute load average on 2 cores, before → after each "
                 "workload): " + "; ".join(loads) + "."]
    return "\n".join(rows)


W2_AUTOGRAD = ("torch autograd (cholesky)", "torch autograd (solve)")


def _w2_w3_user_rows(w: dict[str, Any], tag: str, name: str, u: dict[str, Any]) -> list[str]:
    """W2: the user row against the fastest JAX method of the run (informative) and against
    autograd through the normal equations' Cholesky / solve; W3: against ours (closed-form
    derivatives, L-BFGS; informative). The unrolled rows are the caller's."""
    ms, out = w["methods"], []
    if w.get("workload") == "W2":
        jax = [(n, r["total_s"]) for n, r in ms.items() if r["library"].split()[0] in JAX_LIBS]
        if jax:
            jn, jt = min(jax, key=lambda x: x[1])
            out.append(f"| {tag}: {name} / fastest JAX anchor ({jn}; informative) | "
                       f"{u['total_s']:.4f} vs {jt:.4f} s = {u['total_s'] / jt:.2f} | — |")
        for an in W2_AUTOGRAD:
            a = ms.get(an)
            if a:
                out.append(f"| {tag}: {name} faster than {an} | {u['total_s']:.4f} vs "
                           f"{a['total_s']:.4f} s | {_verdict(u['total_s'] < a['total_s'])} |")
    ours = ms.get("ours")
    if w.get("workload") == "W3" and ours:
        r = u["total_s"] / ours["total_s"]
        out.append(f"| {tag}: {name} / ours (closed-form derivatives, L-BFGS; informative) | "
                   f"{u['total_s']:.4f} vs {ours['total_s']:.4f} s = {r:.2f} | — |")
    return out

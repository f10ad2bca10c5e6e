"""Prints the mutation score of the exercise checkers at the end of a run that ran mutation tests."""
import exercise_harness


def pytest_terminal_summary(terminalreporter):
    results = exercise_harness.RESULTS
    if not results:
        return
    total = sum(len(v) for v in results.values())
    caught = sum(c for v in results.values() for _, c, _ in v)
    named = sum(n for v in results.values() for _, _, n in v)
    write = terminalreporter.write_line
    write("")
    write(f"mutation score: {caught}/{total} wrong answers caught ({caught / total:.0%}), "
          f"{named}/{total} with a hint naming the mistake ({named / total:.0%})")
    for key in sorted(results, key=lambda k: tuple(int(x) for x in k.split("."))):
        v = results[key]
        missed = [name for name, c, n in v if not n]
        write(f"  {key}: {sum(n for _, _, n in v)}/{len(v)}" + (f"  (missed: {', '.join(missed)})" if missed else ""))

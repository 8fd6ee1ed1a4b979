"""Planning questions: the agent's answer carries an active-learning campaign's ranked finds (reference values) and
its proposal for the candidates it did not compute (prediction ± calibrated spread), all traced to the call."""


def test_campaign_answer_ranks_finds_and_proposes(make_agent):
    pool = ["methane", "ethane", "water", "acetylene"]
    agent = make_agent(
        [
            {
                "tool": "run_campaign",
                "args": {"name": "gaps", "candidates": pool, "budget": 2, "batch_size": 1, "committee": 2,
                         "steps": 10, "goal": "maximize"},
            },
            "",
        ]
    )  # fmt: skip
    run = agent.ask(
        "Which of these molecules most likely has the largest HOMO-LUMO gap, using at most 2 GFN2-xTB labels?"
    )
    rows = {r.property: r for r in run.answer.results}
    assert "best candidates" in rows and "gfn2-xtb labels, 2 of 2 spent" in rows["best candidates"].method
    found = [r for r in run.answer.results if r.property.startswith("gap of ")]
    assert len(found) == 2 and found[0].value >= found[1].value and found[0].unit == "eV"
    proposed = [r for r in run.answer.results if r.property.startswith("predicted gap of ")]
    assert proposed and all(r.uncertainty is not None and r.uncertainty >= 0 for r in proposed)
    assert all(r.tool_calls for r in run.answer.results)

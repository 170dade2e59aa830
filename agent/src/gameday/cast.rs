//! Casting: which agents run each step, once the agents are known (listed in the file or
//! found through DNS). Named agents must exist; `all` takes every agent; `{count: N}` draws N
//! at random from the agents no other step of the same stage took. The draws come from one
//! generator seeded with the game's seed and consumed in plan order, over the agents sorted
//! by name, so the same seed and the same agents give the same cast (with the same faultline
//! version: the generator is rand's `StdRng`). Every choice is recorded for the report.
//!
//! Pure: names and a seed in, the cast out.

use std::collections::BTreeSet;

use rand::SeedableRng as _;
use rand::rngs::StdRng;

use super::plan::{PlanStage, ScenarioRef, Targets};
use super::report::Selection;

/// A stage with its agents chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct CastStage {
    /// Name.
    pub name: String,
    /// (scenario, agent names) pairs that run together.
    pub steps: Vec<(ScenarioRef, Vec<String>)>,
}

/// The plan with every step's agents chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Cast {
    /// The seed the `count:` draws used.
    pub seed: u64,
    /// The stages, in order.
    pub stages: Vec<CastStage>,
    /// What each step chose, and from what (for the report).
    pub selections: Vec<Selection>,
}

/// Why a plan cannot be cast on these agents.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CastError {
    /// A step names an agent that is not there.
    #[error(
        "stage {stage}: {scenario} names agent {agent:?}, which is not among the agents ({known})"
    )]
    UnknownAgent {
        /// The stage.
        stage: String,
        /// The step's scenario.
        scenario: String,
        /// The name.
        agent: String,
        /// The agents there are, comma-separated.
        known: String,
    },
    /// `{count: N}` asks for more agents than the stage has left.
    #[error(
        "stage {stage}: {scenario} asks for count {count}, but only {left} of the {total} agents are not taken by the stage's other steps"
    )]
    TooFew {
        /// The stage.
        stage: String,
        /// The step's scenario.
        scenario: String,
        /// N.
        count: usize,
        /// Agents not yet taken in the stage.
        left: usize,
        /// All agents.
        total: usize,
    },
}

/// Chooses every step's agents among `agents` (names), drawing `count:` steps with `seed`.
pub fn cast(stages: &[PlanStage], agents: &[String], seed: u64) -> Result<Cast, CastError> {
    let sorted: BTreeSet<&str> = agents.iter().map(String::as_str).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Cast {
        seed,
        stages: Vec::new(),
        selections: Vec::new(),
    };
    for stage in stages {
        let mut chosen: Vec<Option<Vec<String>>> = vec![None; stage.steps.len()];
        let mut taken: BTreeSet<&str> = BTreeSet::new();
        // Names and `all` first: a draw never takes an agent a step asked for by name.
        for (k, (sc, targets)) in stage.steps.iter().enumerate() {
            let names: Vec<String> = match targets {
                Targets::Named(names) => {
                    if let Some(missing) = names.iter().find(|n| !sorted.contains(n.as_str())) {
                        return Err(CastError::UnknownAgent {
                            stage: stage.name.clone(),
                            scenario: sc.name().to_owned(),
                            agent: missing.clone(),
                            known: sorted.iter().copied().collect::<Vec<_>>().join(", "),
                        });
                    }
                    names.clone()
                }
                Targets::All => sorted.iter().map(|s| (*s).to_owned()).collect(),
                Targets::Count(_) => continue,
            };
            taken.extend(
                sorted
                    .iter()
                    .copied()
                    .filter(|a| names.iter().any(|n| n == a)),
            );
            chosen[k] = Some(names);
        }
        for (k, (sc, targets)) in stage.steps.iter().enumerate() {
            let Targets::Count(n) = *targets else {
                continue;
            };
            let pool: Vec<&str> = sorted.difference(&taken).copied().collect();
            if pool.len() < n {
                return Err(CastError::TooFew {
                    stage: stage.name.clone(),
                    scenario: sc.name().to_owned(),
                    count: n,
                    left: pool.len(),
                    total: sorted.len(),
                });
            }
            let mut picked: Vec<&str> = rand::seq::index::sample(&mut rng, pool.len(), n)
                .into_iter()
                .map(|i| pool[i])
                .collect();
            picked.sort_unstable();
            taken.extend(picked.iter().copied());
            chosen[k] = Some(picked.into_iter().map(str::to_owned).collect());
        }
        let mut steps = Vec::new();
        for ((sc, targets), names) in stage.steps.iter().zip(chosen) {
            let names = names.unwrap_or_default();
            out.selections.push(Selection {
                stage: stage.name.clone(),
                scenario: sc.name().to_owned(),
                rule: targets.to_string(),
                not_selected: sorted
                    .iter()
                    .filter(|a| !names.iter().any(|n| n == *a))
                    .map(|a| (*a).to_owned())
                    .collect(),
                chosen: names.clone(),
            });
            steps.push((sc.clone(), names));
        }
        out.stages.push(CastStage {
            name: stage.name.clone(),
            steps,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, steps: &[(&str, Targets)]) -> PlanStage {
        PlanStage {
            name: name.into(),
            steps: steps
                .iter()
                .map(|(sc, t)| (ScenarioRef::Named((*sc).into()), t.clone()))
                .collect(),
        }
    }

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node{i}")).collect()
    }

    #[test]
    fn a_count_draws_that_many_distinct_agents_the_same_way_for_the_same_seed() {
        let plan = [stage("s", &[("kill", Targets::Count(2))])];
        let a = cast(&plan, &nodes(3), 7).unwrap();
        let chosen = &a.stages[0].steps[0].1;
        assert_eq!(chosen.len(), 2);
        assert_ne!(chosen[0], chosen[1]);
        assert_eq!(a.selections[0].rule, "count 2");
        assert_eq!(a.selections[0].not_selected.len(), 1);
        assert!(!chosen.contains(&a.selections[0].not_selected[0]));
        // The same seed over the same agents, in any order: the same cast.
        let mut shuffled = nodes(3);
        shuffled.reverse();
        assert_eq!(cast(&plan, &shuffled, 7).unwrap(), a);
        // Over many seeds every agent gets drawn (the draw is not stuck on one).
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            seen.extend(
                cast(&plan, &nodes(3), seed).unwrap().stages[0].steps[0]
                    .1
                    .clone(),
            );
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }

    #[test]
    fn draws_avoid_agents_the_stage_named_and_all_takes_everyone() {
        let plan = [
            stage(
                "together",
                &[
                    ("a", Targets::Named(vec!["node2".into()])),
                    ("b", Targets::Count(2)),
                ],
            ),
            stage("everyone", &[("c", Targets::All)]),
        ];
        for seed in 0..32 {
            let c = cast(&plan, &nodes(3), seed).unwrap();
            assert_eq!(c.stages[0].steps[0].1, vec!["node2".to_owned()]);
            assert_eq!(
                c.stages[0].steps[1].1,
                vec!["node1".to_owned(), "node3".to_owned()]
            );
            assert_eq!(c.stages[1].steps[0].1, nodes(3));
            assert!(c.selections[2].not_selected.is_empty());
        }
    }

    #[test]
    fn unknown_names_and_too_large_counts_are_refused_naming_the_step() {
        let plan = [stage(
            "s",
            &[("kill", Targets::Named(vec!["node9".into()]))],
        )];
        let e = cast(&plan, &nodes(2), 1).unwrap_err();
        assert!(
            e.to_string().contains("\"node9\"") && e.to_string().contains("node1, node2"),
            "{e}"
        );
        let plan = [stage(
            "s",
            &[
                ("a", Targets::Named(vec!["node1".into()])),
                ("kill", Targets::Count(2)),
            ],
        )];
        let e = cast(&plan, &nodes(2), 1).unwrap_err();
        assert_eq!(
            e,
            CastError::TooFew {
                stage: "s".into(),
                scenario: "kill".into(),
                count: 2,
                left: 1,
                total: 2
            }
        );
    }
}

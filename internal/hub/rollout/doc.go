// Package rollout plans how a deployment's new generation reaches its
// vehicles: it splits the targeted vehicles into waves (a canary, waves by
// label selector or by cumulative percentage, the rest), releases each
// wave within maxUnavailable, waits for answers within a per-wave deadline
// (offline vehicles never hold a wave up), bakes between waves, and pauses
// the rollout by itself, saying why, when failures pass the threshold.
//
// Planning is pure (Split, Step, Resume, Observe: same input, same
// output; golden-tested under testdata/); Runner executes it in the hub:
// it reads each active rollout's vehicles and their reports, calls Step,
// stores the result and queues the released vehicles for the
// desired-state issuer. The replica holding the store lease "rollouts"
// does so every few seconds and within a second of a report it serves; any
// replica does so at once when an operator's write it serves may move a
// rollout (the store's version check keeps two replicas' steps from both
// landing). The issuer
// gives each vehicle the newest generation a rollout released to it (or
// that completed), so a vehicle that was offline through several rollouts
// gets the newest allowed generation, never an intermediate one.
//
// Vehicle-state gates (parked, battery>=30, a maintenance window) are not
// evaluated here: they travel in the signed revision and the agent applies
// only while they hold, reporting Phase Waiting meanwhile, which Observe
// reads as the vehicle state "waiting".
package rollout

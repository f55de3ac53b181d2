// Package stacktest holds the end-to-end drills of the compose stack
// (deploy/compose.yaml): with the stack running (`make stack-up`), `make
// stack-test` kills, pauses and cuts off its containers and checks what a user
// would: verdicts, heals, intact objects, trimmed surplus, a standby planner
// taking over and the incident's trace in Jaeger.
//
// The tests carry the build tag `stack` and speak only the public contracts
// (the rehome CLI and its JSON, event subjects, /metrics, the storage API,
// Jaeger's query API, docker), so the module depends on the standard library
// alone and is run outside the workspace (GOWORK=off).
package stacktest

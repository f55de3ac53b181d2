module github.com/rehome/rehome/cmd/rehome

go 1.26.0

require (
	github.com/rehome/rehome/services/detector v0.0.0
	github.com/rehome/rehome/services/mover v0.0.0
	github.com/rehome/rehome/services/planner v0.0.0
	github.com/rehome/rehome/services/storage v0.0.0
	github.com/rehome/rehome/shared v0.0.0
)

replace (
	github.com/rehome/rehome/services/detector => ../../services/detector
	github.com/rehome/rehome/services/mover => ../../services/mover
	github.com/rehome/rehome/services/planner => ../../services/planner
	github.com/rehome/rehome/services/storage => ../../services/storage
	github.com/rehome/rehome/shared => ../../shared
)

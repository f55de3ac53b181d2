package sim

// Shrink returns the smallest schedule it finds, by dropping faults one at
// a time, on which a run of seed still breaks an invariant, with the
// indexes (into sched) of the faults kept. sched must fail. It replays at
// most len(sched)² runs.
func Shrink(cfg Config, seed uint64, sched Schedule) (Schedule, []int) {
	keep := make([]int, len(sched))
	for i := range keep {
		keep[i] = i
	}
	for changed := true; changed && len(keep) > 1; {
		changed = false
		for i := 0; i < len(keep); i++ {
			try := append(append([]int{}, keep[:i]...), keep[i+1:]...)
			if Run(cfg, seed, Pick(sched, try)).Violation != nil {
				keep, changed = try, true
				i--
			}
		}
	}
	return Pick(sched, keep), keep
}

// Pick returns the faults of sched at indexes keep (out of range ones are
// skipped), never nil.
func Pick(sched Schedule, keep []int) Schedule {
	out := Schedule{}
	for _, i := range keep {
		if i >= 0 && i < len(sched) {
			out = append(out, sched[i])
		}
	}
	return out
}

package disk

// Condition says whether a Store refuses new shards, and why. The zero value
// is a store that accepts writes.
type Condition struct {
	// Full: a write was refused for lack of room (the configured capacity,
	// or the filesystem's ENOSPC or EDQUOT) and room for it has not come
	// back since, or the stored shards fill the capacity.
	Full bool
	// ReadOnly: the filesystem refused a change as read-only (EROFS) and
	// has accepted none since.
	ReadOnly bool
}

// Refusing reports whether the store refuses new shards for any reason.
func (c Condition) Refusing() bool { return c.Full || c.ReadOnly }

// Condition returns the store's condition now. Safe for concurrent use.
func (s *Store) Condition() Condition {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.condLocked()
}

// condLocked computes the condition; s.mu must be held.
func (s *Store) condLocked() Condition {
	return Condition{
		Full:     s.capNeed > 0 || s.fsNeed > 0 || (s.capacity > 0 && s.used >= s.capacity),
		ReadOnly: s.readOnly,
	}
}

// condChangedLocked returns the condition and whether it differs from the
// last one reported (which it becomes); s.mu must be held for writing.
func (s *Store) condChangedLocked() (Condition, bool) {
	c := s.condLocked()
	if c == s.cond {
		return c, false
	}
	s.cond = c
	return c, true
}

// reportCond logs a change of condition and hands it to
// Options.OnCondition; call it with s.mu released.
func (s *Store) reportCond(c Condition, changed bool) {
	if !changed {
		return
	}
	if c.Refusing() {
		s.log.Warn("store refuses new shards", "full", c.Full, "read_only", c.ReadOnly)
	} else {
		s.log.Info("store accepts new shards again")
	}
	if s.onCond != nil {
		s.onCond(c)
	}
}

// noteCapacityRefusal records that a shard of size bytes did not fit in the
// capacity; s.mu must be held for writing.
func (s *Store) noteCapacityRefusal(size int64) {
	if s.capNeed == 0 || size < s.capNeed {
		s.capNeed = max(size, 1)
	}
}

// noteWriteFailure records what a failed write of a shard of size bytes says
// about the filesystem: no room (ErrFull) or read-only (ErrReadOnly).
func (s *Store) noteWriteFailure(err error, size int64) {
	full, ro := IsFull(err), IsReadOnly(err)
	if !full && !ro {
		return
	}
	s.mu.Lock()
	if ro {
		s.readOnly = true
	}
	if need := size + HeaderSize; full && (s.fsNeed == 0 || need < s.fsNeed) {
		s.fsNeed = need
	}
	c, changed := s.condChangedLocked()
	s.mu.Unlock()
	s.reportCond(c, changed)
}

// Recheck re-tests a store that refuses new shards: read-only, it creates
// (and removes) a probe temp file; full, it checks whether room for the
// smallest refused write has come back (in the capacity, or free on the
// filesystem). A store that refuses nothing does no I/O. A change is
// reported to Options.OnCondition. The storage node calls it every
// heartbeat; a delete or a successful write also clears what it disproves.
func (s *Store) Recheck() {
	s.mu.RLock()
	ro, fsNeed, capNeed := s.readOnly, s.fsNeed, s.capNeed
	s.mu.RUnlock()
	if !ro && fsNeed == 0 && capNeed == 0 {
		return
	}
	var probeErr error
	if ro {
		probeErr = s.probe()
	}
	free := int64(-1)
	if fsNeed > 0 {
		var err error
		if free, err = s.files.Free(s.dir); err != nil {
			s.log.Warn("cannot check free space", "err", err)
			free = -1
		}
	}
	s.mu.Lock()
	switch {
	case !ro:
	case probeErr == nil:
		s.readOnly = false
	case IsFull(probeErr):
		s.readOnly = false
		if s.fsNeed == 0 {
			s.fsNeed = 1
		}
	}
	if s.fsNeed > 0 && free >= s.fsNeed {
		s.fsNeed = 0
	}
	s.clearCapNeedLocked()
	c, changed := s.condChangedLocked()
	s.mu.Unlock()
	s.reportCond(c, changed)
}

// clearCapNeedLocked forgets a capacity refusal once the refused size fits;
// s.mu must be held for writing.
func (s *Store) clearCapNeedLocked() {
	if s.capNeed > 0 && s.capacity-s.used-s.reserved >= s.capNeed {
		s.capNeed = 0
	}
}

// probe tries to create, close and remove a temp file in the shards
// directory (Open removes one a crash left behind).
func (s *Store) probe() error {
	f, err := s.files.CreateTemp(s.shards, tmpPrefix+"probe-*")
	if err != nil {
		return err
	}
	cerr := f.Close()
	rerr := s.files.Remove(f.Name())
	if cerr != nil {
		return cerr
	}
	return rerr
}

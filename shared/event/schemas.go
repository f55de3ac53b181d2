package event

import (
	"embed"
	"io/fs"
	"strings"
)

// schemaFiles are the JSON Schemas (draft 2020-12) of the payloads, one per
// payload type; docs/events.md documents the same subjects in prose.
//
//go:embed schemas/*.json
var schemaFiles embed.FS

// Schemas returns the JSON Schema (draft 2020-12) of every event payload,
// one file per payload type at the root of the returned FS ("verdict.json",
// "task.json", ...). Each schema is self-contained; its $id is
// https://github.com/rehome/rehome/shared/event/schemas/<file> and its
// "x-rehome-subjects" lists the subjects it describes. Schemas allow fields
// they do not list, so version-1 payloads may grow without breaking readers.
func Schemas() fs.FS {
	sub, err := fs.Sub(schemaFiles, "schemas")
	if err != nil { // cannot happen: the directory is embedded
		panic(err)
	}
	return sub
}

// schemaByPrefix maps subject prefixes (or whole subjects) to schema files.
var schemaByPrefix = []struct{ prefix, file string }{
	{HeartbeatPrefix, "heartbeat.json"},
	{SuspectPrefix, "verdict.json"},
	{DownPrefix, "verdict.json"},
	{UpPrefix, "verdict.json"},
	{DetectorHeld, "hold.json"},
	{DetectorReleased, "hold.json"},
	{PlanPrefix, "plan.json"},
	{TaskPrefix, "task.json"},
	{DonePrefix, "done.json"},
	{FailedPrefix, "failed.json"},
	{DeadPrefix, "dead.json"},
	{LostPrefix, "lost.json"},
	{CorruptPrefix, "corrupt.json"},
	{ConditionPrefix, "condition.json"},
	{DrainingPrefix, "drain.json"},
	{DrainedPrefix, "drain.json"},
	{HealProgress, "progress.json"},
	{HealStalled, "stalled.json"},
	{HealPaused, "heal_switch.json"},
	{HealResumed, "heal_switch.json"},
}

// SchemaName returns the file in Schemas() that describes the payload
// published on subject ("verdict.json" for rehome.node.down.storage-3), or ""
// when subject is not an event subject (control calls, anything unknown).
// Prefix subjects need one more token; fixed subjects must match exactly.
func SchemaName(subject string) string {
	for _, s := range schemaByPrefix {
		if strings.HasSuffix(s.prefix, ".") {
			if rest, ok := strings.CutPrefix(subject, s.prefix); ok && rest != "" && !strings.Contains(rest, ".") {
				return s.file
			}
		} else if subject == s.prefix {
			return s.file
		}
	}
	return ""
}

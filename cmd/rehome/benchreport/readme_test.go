package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEShowsResultsJSON: the README's performance tables are
// bench/results.json's and bench/membership-results.json's, every number
// identical (regenerate them with benchreport -markdown after a run).
func TestREADMEShowsResultsJSON(t *testing.T) {
	top := filepath.Join("..", "..", "..")
	readme, err := os.ReadFile(filepath.Join(top, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"results.json", "membership-results.json"} {
		b, err := os.ReadFile(filepath.Join(top, "bench", name))
		if err != nil {
			t.Fatal(err)
		}
		var rep Report
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("bench/%s: %v", name, err)
		}
		if len(rep.Figures) == 0 {
			t.Fatalf("bench/%s has no figures", name)
		}
		want := Markdown(rep.Figures)
		if !strings.Contains(string(readme), want) {
			t.Fatalf("README.md lacks bench/%s's table; paste this (benchreport -markdown):\n%s", name, want)
		}
	}
}

// TestSourceNamesTheCommit: a report names the commit checked out here.
func TestSourceNamesTheCommit(t *testing.T) {
	commit, _, err := gitSource("bench/out.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(commit) != 40 {
		t.Fatalf("commit %q, want 40 hex digits", commit)
	}
}

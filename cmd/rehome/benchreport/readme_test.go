package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEShowsResultsJSON: the README's performance table is
// bench/results.json's, every number identical (regenerate it with
// benchreport -markdown after a run).
func TestREADMEShowsResultsJSON(t *testing.T) {
	top := filepath.Join("..", "..", "..")
	b, err := os.ReadFile(filepath.Join(top, "bench", "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("bench/results.json: %v", err)
	}
	if len(rep.Figures) == 0 {
		t.Fatal("bench/results.json has no figures")
	}
	readme, err := os.ReadFile(filepath.Join(top, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := Markdown(rep.Figures)
	if !strings.Contains(string(readme), want) {
		t.Fatalf("README.md lacks bench/results.json's table; paste this (benchreport -markdown):\n%s", want)
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

package core

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bannedImports are the import path prefixes the core must not depend on,
// directly or through another package: the bus, metrics and tracing stay in
// the adapter.
var bannedImports = []string{
	"github.com/nats-io/",
	"github.com/prometheus/",
	"go.opentelemetry.io/",
}

// TestCoreImportsNoBusMetricsOrTracing lists the core's dependencies with
// the go tool and fails on any bus, metrics or tracing package.
func TestCoreImportsNoBusMetricsOrTracing(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 5 {
		t.Fatalf("go list -deps listed only %q", deps)
	}
	for _, d := range deps {
		for _, b := range bannedImports {
			if strings.HasPrefix(d, b) {
				t.Errorf("core depends on %s", d)
			}
		}
	}
}

// wallClock are the functions of package time that read the wall clock or
// wait on it.
var wallClock = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true, "AfterFunc": true,
	"Tick": true, "NewTimer": true, "NewTicker": true,
}

// TestCoreStartsNoGoroutineAndReadsNoClock parses the core's non-test
// files: no go statement, no sync or sync/atomic import (it is driven from
// one goroutine at a time), no wall-clock call of package time.
func TestCoreStartsNoGoroutineAndReadsNoClock(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			if p := strings.Trim(imp.Path.Value, `"`); p == "sync" || p == "sync/atomic" {
				t.Errorf("%s imports %s", name, p)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s: go statement", fset.Position(x.Pos()))
			case *ast.SelectorExpr:
				if id, ok := x.X.(*ast.Ident); ok && id.Name == "time" && wallClock[x.Sel.Name] {
					t.Errorf("%s: time.%s reads the wall clock", fset.Position(x.Pos()), x.Sel.Name)
				}
			}
			return true
		})
	}
	if checked < 5 {
		t.Fatalf("checked only %d files", checked)
	}
}

// Command rehome is the operator's CLI and the single binary of every rehome
// service: `rehome dev` runs a local cluster, `rehome storage|detector|planner|mover`
// run one service, and the other commands read and write objects and follow a heal.
package main

import (
	"fmt"
	"os"
)

func main() {
	code, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "rehome: "+oneLine(err.Error()))
	}
	os.Exit(code)
}

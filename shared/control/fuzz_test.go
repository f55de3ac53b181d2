package control_test

import (
	"testing"

	"github.com/rehome/rehome/shared/control"
)

// FuzzDecodeReply: any reply bytes give data or an error, never a panic.
func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"ok":true,"data":{"allocations":[]}}`))
	f.Add([]byte(`{"ok":false,"error":"x","code":"conflict"}`))
	f.Add([]byte(`{"ok":true,"data":"not an object"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var a control.AllocateReply
		_ = control.DecodeReply(data, &a)
		var st control.ClusterStatus
		_ = control.DecodeReply(data, &st)
	})
}

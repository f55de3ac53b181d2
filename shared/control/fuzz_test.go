package control_test

import (
	"errors"
	"testing"

	"github.com/rehome/rehome/shared/control"
)

// FuzzDecodeReply: any reply bytes give data or an error, never a panic,
// for every reply type a caller decodes (CLI and planner); a refusal comes
// back as a *RemoteError carrying the planner's code.
func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"ok":true,"data":{"allocations":[]}}`))
	f.Add([]byte(`{"ok":false,"error":"x","code":"conflict"}`))
	f.Add([]byte(`{"ok":true,"data":"not an object"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		outs := []any{&control.AllocateReply{}, &control.ClusterStatus{}, &control.InventoryPage{},
			&control.HealNodeReply{}, &control.HealPlan{}, nil}
		for _, out := range outs {
			err := control.DecodeReply(data, out)
			var re *control.RemoteError
			if errors.As(err, &re) && (errors.Is(err, control.ErrConflict) != (re.Code == control.CodeConflict)) {
				t.Fatalf("refusal %+v does not match its code", re)
			}
		}
	})
}

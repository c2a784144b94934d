package api

import "testing"

// TestAPIErasuresRunOncePerTenantAndBoundedPerNode: a second erasure of a
// tenant is refused while one runs, and so is any past maxErasures on the
// node; each may start again once one ends.
func TestAPIErasuresRunOncePerTenantAndBoundedPerNode(t *testing.T) {
	var e erasures
	doneA, ok := e.start("acme")
	if !ok {
		t.Fatal("the first erasure was refused")
	}
	if _, ok := e.start("acme"); ok {
		t.Fatal("a second erasure of the same tenant started")
	}
	var dones []func()
	for i := 1; i < maxErasures; i++ {
		d, ok := e.start("t" + string(rune('a'+i)))
		if !ok {
			t.Fatalf("erasure %d of %d on the node was refused", i+1, maxErasures)
		}
		dones = append(dones, d)
	}
	if _, ok := e.start("beta"); ok {
		t.Fatalf("erasure %d started on the node, past the bound", maxErasures+1)
	}
	doneA()
	doneA() // a second call changes nothing
	doneB, ok := e.start("beta")
	if !ok {
		t.Fatal("an erasure was refused after one ended")
	}
	if _, ok := e.start("acme"); ok {
		t.Fatal("the node's bound was passed after a double end")
	}
	doneB()
	for _, d := range dones {
		d()
	}
}

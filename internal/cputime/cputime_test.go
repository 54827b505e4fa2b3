package cputime

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// spin keeps a processor busy for d of the time elapsed.
func spin(d time.Duration) (n int) {
	for start := time.Now(); time.Since(start) < d; n++ {
	}
	return n
}

// TestOfCountsTheThreadsWorkOnly: a sleep costs no processor time, a busy
// loop costs about its length when it has a processor to itself, and
// goroutines that compete with it for the processors (as other processes
// on a loaded machine do) make it wait longer, not cost more.
func TestOfCountsTheThreadsWorkOnly(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the thread's processor time is read on Linux only")
	}
	if d := Of(func() { time.Sleep(300 * time.Millisecond) }); d > 100*time.Millisecond {
		t.Errorf("a 300 ms sleep cost %v of processor time, want next to none", d)
	}
	work := 3000000
	alone := Of(func() {
		for i := 0; i < work; i++ {
			spinStep(i)
		}
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	busy := 2 * runtime.NumCPU()
	for range busy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					spin(time.Millisecond)
				}
			}
		}()
	}
	began := time.Now()
	loaded := Of(func() {
		for i := 0; i < work; i++ {
			spinStep(i)
		}
	})
	elapsed := time.Since(began)
	close(stop)
	wg.Wait()
	t.Logf("the same loop: %v alone, %v beside %d busy goroutines (%v elapsed)", alone, loaded, busy, elapsed)
	if alone <= 0 || loaded <= 0 {
		t.Fatalf("a busy loop cost %v alone, %v loaded: want some processor time", alone, loaded)
	}
	if loaded > 3*alone+50*time.Millisecond {
		t.Errorf("the same loop cost %v beside busy goroutines, %v alone: the load is counted", loaded, alone)
	}
}

var sink int

//go:noinline
func spinStep(i int) { sink += i * i }

// TestProcessCountsItsWork: a process's processor time grows by about
// the work it does (this one's, spinning), its name is its command's,
// and a process that does not exist has none to read.
func TestProcessCountsItsWork(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is read on Linux only")
	}
	before, name, ok := Process(os.Getpid())
	if !ok || name == "" || !strings.HasPrefix(filepath.Base(os.Args[0]), name) {
		t.Fatalf("this process's processor time: %v, named %q (%v); want it, named as %s", before, name, ok, filepath.Base(os.Args[0]))
	}
	spent := Of(func() { spin(300 * time.Millisecond) })
	after, _, ok := Process(os.Getpid())
	if !ok || after-before < spent-3*clockTick {
		t.Errorf("the process spent %v (%v), its thread %v: want at least the thread's", after-before, ok, spent)
	}
	if d, _, ok := Process(1 << 30); ok {
		t.Errorf("process %d, which cannot exist: %v, want none", 1<<30, d)
	}
}

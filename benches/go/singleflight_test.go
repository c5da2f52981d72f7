// Package singleflightbench measures Go's golang.org/x/sync/singleflight in the scenarios of the
// Rust benches (benches/src/scenario.rs), so that the report can put Go's figure beside
// coalescer's, measured on the same machine in the same run (ci/bench.sh runs it when `go` is
// there, with GOMAXPROCS=2 to match the Rust runtime's two workers).
//
//	BenchmarkS1DistinctKeys1   S1: one goroutine, each call with a key nobody else uses
//	BenchmarkS1DistinctKeys2   S1: two goroutines split the calls (ns/op: wall time per call, both together)
//	BenchmarkS4HotKey2         S4: two goroutines call with one key, work that returns at once
//
// The keys are strings (singleflight's only key type), built before the timed region in a ring
// that is reused (a call is over long before its key comes round again), so that no call
// allocates its key: the figure compares with the Rust u64 rows. Each benchmark also reports
// the process CPU time over the wall time (cpu/wall): near 2 for two goroutines that ran in
// parallel, near 1 when they took turns.
package singleflightbench

import (
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/singleflight"
)

const ring = 1 << 16

var keys = func() []string {
	k := make([]string, ring)
	for i := range k {
		k[i] = "key:" + strconv.Itoa(i)
	}
	return k
}()

var sink int

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timed runs body in `tasks` goroutines, goroutine t making calls t, t+tasks, ... of b.N, and
// reports cpu/wall.
func timed(b *testing.B, tasks int, body func(i int)) {
	b.ReportAllocs()
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu, start := cpuTime(), time.Now()
	for t := 0; t < tasks; t++ {
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			for i := t; i < b.N; i += tasks {
				body(i)
			}
		}(t)
	}
	wg.Wait()
	wall := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu)/float64(wall), "cpu/wall")
}

func distinct(b *testing.B, tasks int) {
	var g singleflight.Group
	timed(b, tasks, func(i int) {
		v, _, _ := g.Do(keys[i%ring], func() (interface{}, error) { return 7, nil })
		if v.(int) != 7 {
			sink++
		}
	})
}

func BenchmarkS1DistinctKeys1(b *testing.B) { distinct(b, 1) }

func BenchmarkS1DistinctKeys2(b *testing.B) { distinct(b, 2) }

func BenchmarkS4HotKey2(b *testing.B) {
	var g singleflight.Group
	timed(b, 2, func(i int) {
		v, _, _ := g.Do("hot", func() (interface{}, error) { return 7, nil })
		if v.(int) != 7 {
			sink++
		}
	})
}

package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBucketRoundTrip(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 31, 32, 33, 63, 64, 65, 100, 1000, 1 << 20, 123456789, 1<<histMaxBits - 1} {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d, below the previous value's bucket %d", v, i, prev)
		}
		prev = i
		lo, w := bucketBounds(i)
		if v < lo || v >= lo+w {
			t.Fatalf("value %d in bucket %d = [%d, %d)", v, i, lo, lo+w)
		}
		if v >= histSub && float64(w)/float64(v) > 1.0/histSub {
			t.Fatalf("bucket of %d is %d wide: more than 1/%d", v, w, histSub)
		}
	}
	if i := bucketOf(math.MaxInt64); i != histBuckets-1 {
		t.Fatalf("bucketOf(MaxInt64) = %d, want the last bucket %d", i, histBuckets-1)
	}
}

func TestHistogramExactSmallValues(t *testing.T) {
	var h Histogram
	for v := int64(1); v <= 20; v++ { // below histSub: exact buckets
		h.Record(v)
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 10}, {0.9, 18}, {0.95, 19}, {1, 20}, {0, 1}} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if h.Count() != 20 || h.Min() != 1 || h.Max() != 20 || h.Mean() != 10.5 {
		t.Errorf("count %d min %d max %d mean %v", h.Count(), h.Min(), h.Max(), h.Mean())
	}
}

func TestHistogramQuantilesUniform(t *testing.T) {
	// 1..100000 µs in ns: the q-quantile is q*100000 µs, within the
	// bucket precision.
	var h Histogram
	for v := int64(1); v <= 100000; v++ {
		h.Record(v * 1000)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := q * 100000 * 1000
		got := h.Quantile(q)
		if math.Abs(got-want)/want > 1.0/histSub {
			t.Errorf("Quantile(%v) = %v, want %v ± %.1f%%", q, got, want, 100.0/histSub)
		}
	}
	if h.Quantile(1) != 100000*1000 || h.Max() != 100000*1000 {
		t.Errorf("max: Quantile(1) = %v, Max() = %d", h.Quantile(1), h.Max())
	}
}

func TestHistogramMergeMatchesSingle(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var all Histogram
	parts := make([]Histogram, 4)
	var values []int64
	for i := range 50000 {
		v := int64(rng.ExpFloat64() * 200e3) // exponential, mean 200 µs
		values = append(values, v)
		all.Record(v)
		parts[i%len(parts)].Record(v)
	}
	var merged Histogram
	for i := range parts {
		merged.Merge(&parts[i])
	}
	if merged != all {
		t.Fatal("merging the parts differs from recording everything in one histogram")
	}
	slices.Sort(values)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := float64(values[int(math.Ceil(q*float64(len(values))))-1])
		got := merged.Quantile(q)
		if math.Abs(got-want)/want > 1.0/histSub {
			t.Errorf("Quantile(%v) = %v, exact %v", q, got, want)
		}
	}
}

func TestHistogramEmptyAndNegative(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram: want zeros")
	}
	h.Record(-5)
	if h.Quantile(0.5) != 0 || h.Count() != 1 {
		t.Fatalf("negative value: got quantile %v count %d, want 0 and 1", h.Quantile(0.5), h.Count())
	}
	var e Histogram
	h.Merge(&e)
	if h.Count() != 1 {
		t.Fatal("merging an empty histogram changed the count")
	}
}

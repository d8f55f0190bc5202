package bench

import (
	"math"
	"math/bits"
)

// Histogram layout: values below histSub are counted exactly; above, each
// power of two is split into histSub linear sub-buckets, so a bucket is at
// most 1/histSub (about 3%) of its values wide. Values at or above
// 1<<histMaxBits are counted in the last bucket (their exact maximum is kept
// separately).
const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histMaxBits = 40 // 2^40 ns is about 18 minutes
	histBuckets = histSub + (histMaxBits-histSubBits)*histSub
)

// Histogram is a fixed-size log-linear histogram of non-negative values
// (nanoseconds, in this package). Record does not allocate or lock: each
// goroutine keeps its own Histogram, and they are merged at the end.
// The zero value is an empty histogram ready to use.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64
	min    int64
	sum    float64
}

// bucketOf returns the bucket index of v >= 0.
func bucketOf(v int64) int {
	if v < histSub {
		return int(v)
	}
	u := uint64(v)
	msb := bits.Len64(u) - 1 // >= histSubBits
	if msb >= histMaxBits {
		return histBuckets - 1
	}
	shift := msb - histSubBits
	sub := int(u>>shift) - histSub // 0 .. histSub-1
	return histSub + shift*histSub + sub
}

// bucketBounds returns the lowest value of bucket i and its width.
func bucketBounds(i int) (lo, width int64) {
	if i < histSub {
		return int64(i), 1
	}
	shift := (i - histSub) / histSub
	sub := (i - histSub) % histSub
	return int64(histSub+sub) << shift, int64(1) << shift
}

// Record adds one value; negative values count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds the counts of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest recorded value (exact), 0 if none.
func (h *Histogram) Max() int64 { return h.max }

// Min returns the smallest recorded value (exact), 0 if none.
func (h *Histogram) Min() int64 { return h.min }

// Mean returns the mean of the recorded values, 0 if none.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns an estimate of the q-quantile (0 <= q <= 1): the middle
// of the bucket holding the value of rank ceil(q*n), clamped to the exact
// minimum and maximum. It returns 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return float64(h.min)
	}
	if q >= 1 {
		return float64(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, w := bucketBounds(i)
			v := float64(lo) + float64(w-1)/2
			return math.Min(math.Max(v, float64(h.min)), float64(h.max))
		}
	}
	return float64(h.max)
}

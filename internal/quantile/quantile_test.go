package quantile

import "testing"

func TestNearestRank(t *testing.T) {
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	thousand := make([]int, 1000)
	for i := range thousand {
		thousand[i] = i + 1
	}
	for _, tc := range []struct {
		name   string
		sorted []int
		q      float64
		want   int
	}{
		{"none", nil, 0.99, 0},
		{"one", []int{7}, 0.99, 7},
		{"p50 of 100", hundred, 0.50, 50},
		{"p99 of 100 is the 99th, not the maximum", hundred, 0.99, 99},
		{"p100 of 100", hundred, 1, 100},
		{"p99 of 1000", thousand, 0.99, 990},
		{"p50 of 3", []int{1, 2, 3}, 0.50, 2},
		{"tiny q", hundred, 0.001, 1},
	} {
		if got := NearestRank(tc.sorted, tc.q); got != tc.want {
			t.Errorf("%s: NearestRank(q=%v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
}

// Package loadreport is the summary examples/loadgen prints as JSON when
// it is done, for loadgen to fill and for the tests that run it to read.
package loadreport

import "time"

// Summary is what loadgen prints when it is done.
type Summary struct {
	Requests int `json:"requests"`
	OK       int `json:"ok"`
	Failed   int `json:"failed"`
	// Skipped counts requests the pacer could not hand to a worker in
	// time (every worker busy): the client's limit, not the server's.
	Skipped         int                  `json:"skipped"`
	Errors          map[string]int       `json:"errors"`
	Instances       map[string]*Instance `json:"instances"`
	DurationSeconds float64              `json:"duration_seconds"`
	// PerSecond is the timeline: what was sent and how it went, second by
	// second from the start.
	PerSecond []*Second `json:"per_second"`
}

// Instance is what one instance got.
type Instance struct {
	Requests     int       `json:"requests"`
	Failed       int       `json:"failed"`
	FirstSeen    time.Time `json:"first_seen"`
	FirstRequest time.Time `json:"first_request"`
	FirstOK      time.Time `json:"first_ok"`
}

// Second is one second of the timeline.
type Second struct {
	Second    int64   `json:"second"`
	Offered   float64 `json:"offered_rate"`
	Sent      int     `json:"sent"`
	OK        int     `json:"ok"`
	Failed    int     `json:"failed"`
	Instances int     `json:"instances"`
}

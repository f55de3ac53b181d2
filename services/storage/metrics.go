package storage

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rehome/rehome/services/storage/disk"
	"github.com/rehome/rehome/shared/event"
)

// usage is what the gauges read: satisfied by *disk.Store.
type usage interface {
	Usage() (shards int, used int64)
	ChecksumFailures() uint64
	Condition() disk.Condition
}

// metrics are the storage node's instruments, registered on its own registry.
type metrics struct {
	requests      *prometheus.CounterVec
	bytesWritten  prometheus.Counter
	bytesRead     prometheus.Counter
	heartbeats    prometheus.Counter
	registrations *prometheus.CounterVec
	// malformed counts requests from the bus dropped as malformed, by
	// subject (the inventory requests: control.InventoryPrefix).
	malformed *prometheus.CounterVec
}

// malformedInventory is the subject label of malformed inventory requests.
const malformedInventory = "rehome.ctl.inventory"

func newMetrics(reg *prometheus.Registry, u usage, capacity int64) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_storage_requests_total",
			Help: "HTTP requests answered, by method and status code (\"aborted\" when the transfer was cut).",
		}, []string{"method", "code"}),
		bytesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_storage_bytes_written_total",
			Help: "Shard bytes written, verified and made durable.",
		}),
		bytesRead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_storage_bytes_read_total",
			Help: "Shard bytes sent to clients.",
		}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rehome_storage_heartbeats_total",
			Help: "Heartbeats published.",
		}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_storage_registrations_total",
			Help: "Attempts to write the node record to the nodes bucket, by result.",
		}, []string{"result"}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rehome_storage_malformed_events_total",
			Help: "Messages from the bus dropped, by subject and reason (inventory requests that are not JSON requests or have no reply subject: malformed; a negative limit or an after that is no shard id: invalid).",
		}, []string{"subject", "reason"}),
	}
	m.malformed.WithLabelValues(malformedInventory, event.ReasonMalformed)
	reg.MustRegister(
		m.requests, m.bytesWritten, m.bytesRead, m.heartbeats, m.registrations, m.malformed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rehome_storage_shards",
			Help: "Shards stored on this node.",
		}, func() float64 { n, _ := u.Usage(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rehome_storage_used_bytes",
			Help: "Sum of the sizes of the stored shards.",
		}, func() float64 { _, b := u.Usage(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rehome_storage_capacity_bytes",
			Help: "Shard bytes this node accepts.",
		}, func() float64 { return float64(capacity) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rehome_storage_full",
			Help: "1 while the node refuses new shards for lack of room (a write refused by its capacity or by ENOSPC/EDQUOT, room not back yet; or shards filling the capacity), else 0.",
		}, func() float64 { return b2f(u.Condition().Full) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rehome_storage_read_only",
			Help: "1 while the node's filesystem refuses changes as read-only (EROFS), else 0.",
		}, func() float64 { return b2f(u.Condition().ReadOnly) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "rehome_storage_checksum_failures_total",
			Help: "Stored shards that failed verification and were quarantined.",
		}, func() float64 { return float64(u.ChecksumFailures()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// methodLabel bounds the method label to the methods the API knows.
func methodLabel(m string) string {
	switch m {
	case "GET", "HEAD", "PUT", "DELETE", "POST":
		return m
	}
	return "other"
}

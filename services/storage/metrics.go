package storage

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// usage is what the gauges read: satisfied by *disk.Store.
type usage interface {
	Usage() (shards int, used int64)
	ChecksumFailures() uint64
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
			Help: "Messages from the bus dropped as malformed, by subject (inventory requests that are not valid JSON requests or have no reply subject).",
		}, []string{"subject"}),
	}
	m.malformed.WithLabelValues(malformedInventory)
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
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "rehome_storage_checksum_failures_total",
			Help: "Stored shards that failed verification and were quarantined.",
		}, func() float64 { return float64(u.ChecksumFailures()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// methodLabel bounds the method label to the methods the API knows.
func methodLabel(m string) string {
	switch m {
	case "GET", "HEAD", "PUT", "DELETE", "POST":
		return m
	}
	return "other"
}

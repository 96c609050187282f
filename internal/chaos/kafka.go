package chaos

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// cluster is the embedded Kafka (kfake, on loopback) and the faults it
// injects into produce requests. Each fault is on until a deadline, so
// faults need no goroutine to end them, and they may overlap.
type cluster struct {
	kfake *kfake.Cluster
	addr  string
	// done wakes produce requests held back, when the cluster closes.
	done chan struct{}
	// slowBy is how long a produce request is held back while slow.
	slowBy time.Duration
	// gatedTopic's produce requests are refused while gate is set.
	gatedTopic string
	gate       atomic.Bool
	// Deadlines, in Unix nanoseconds, of the faults.
	refuseAll, refuseOne, dropConns, slow atomic.Int64
	// held counts the produce requests held back while slow.
	held atomic.Int64
}

// startCluster starts a one-broker cluster that creates topics of
// partitions partitions on first use.
func startCluster(partitions int, slowBy time.Duration, gatedTopic string) (*cluster, error) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(partitions),
		kfake.AllowAutoTopicCreation(), kfake.Ports(0))
	if err != nil {
		return nil, fmt.Errorf("chaos: start kfake: %w", err)
	}
	k := &cluster{kfake: c, addr: c.ListenAddrs()[0], done: make(chan struct{}), slowBy: slowBy, gatedTopic: gatedTopic}
	produce := []kmsg.Key{kmsg.Produce}
	// Retriable refusals, as from a broker short of in-sync replicas: of
	// every partition, or of partition 0 only, so that one request of a
	// round fails while the others succeed.
	c.Fault(
		kfake.Fault{Keys: produce, Err: kerr.NotEnoughReplicas, Count: -1, When: k.until(&k.refuseAll)},
		kfake.Fault{Keys: produce, Partitions: []int32{0}, Err: kerr.NotEnoughReplicas, Count: -1, When: k.until(&k.refuseOne)},
		kfake.Fault{Keys: produce, Topic: gatedTopic, Err: kerr.NotEnoughReplicas, Count: -1,
			When: func(kmsg.Request) bool { return k.gate.Load() }},
	)
	c.ControlKey(int16(kmsg.Produce), k.controlProduce)
	return k, nil
}

// until returns a fault filter that holds while the deadline in d is ahead.
func (k *cluster) until(d *atomic.Int64) func(kmsg.Request) bool {
	return func(kmsg.Request) bool { return time.Now().UnixNano() < d.Load() }
}

// controlProduce runs on every produce request before the faults: it closes
// the connection while dropConns holds, and holds the request back slowBy
// (letting other connections run) while slow holds.
func (k *cluster) controlProduce(kmsg.Request) (kmsg.Response, error, bool) {
	k.kfake.KeepControl()
	now := time.Now().UnixNano()
	if now < k.dropConns.Load() {
		return nil, errors.New("chaos: produce connection dropped"), true
	}
	if now < k.slow.Load() {
		k.held.Add(1)
		k.kfake.SleepControl(func() {
			t := time.NewTimer(k.slowBy)
			defer t.Stop()
			select {
			case <-t.C:
			case <-k.done:
			}
		})
	}
	return nil, nil, false
}

// strike turns a fault on for d from now.
func strike(deadline *atomic.Int64, d time.Duration) {
	deadline.Store(time.Now().Add(d).UnixNano())
}

// heal turns every fault off.
func (k *cluster) heal() {
	for _, d := range []*atomic.Int64{&k.refuseAll, &k.refuseOne, &k.dropConns, &k.slow} {
		d.Store(0)
	}
	k.gate.Store(false)
}

// hasTopic says whether topic exists now.
func (k *cluster) hasTopic(topic string) bool {
	return k.kfake.TopicInfo(topic) != nil
}

func (k *cluster) close() {
	k.heal()
	close(k.done)
	k.kfake.Close()
}

package consumer

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/segmentio/kafka-go"
)

// Strategy names accepted by BalancerByName and WithStrategy.
const (
	StrategyAverage        = "average"
	StrategyRoundRobin     = "round-robin"
	StrategyConsistentHash = "consistent-hash"
	StrategyStatic         = "static"
	StrategyRack           = "rack"
)

// ErrUnknownStrategy: BalancerByName was given a name it does not know.
var ErrUnknownStrategy = errors.New("consumer: unknown allocation strategy")

// BalancerConfig carries what the strategies need besides their name.
type BalancerConfig struct {
	// Member is this member's stable name, sent to the group leader in the
	// join metadata (default: host name and a random suffix). The
	// consistent-hash, static and rack strategies key on it; give each
	// instance a distinct name that survives its restarts. The average and
	// round-robin strategies (kafka-go's) order members by the member id
	// the coordinator assigns, and ignore it.
	Member string
	// Rack is this member's rack or machine room (strategy "rack").
	Rack string
	// Static maps member names to the partitions they own in every topic
	// (strategy "static").
	Static map[string][]int
	// PartitionRacks maps partitions to racks (strategy "rack"); a partition
	// not listed takes its leader broker's rack.
	PartitionRacks map[int]string
	// VirtualNodes is the number of ring points per member (strategy
	// "consistent-hash", default 64).
	VirtualNodes int
}

// BalancerByName returns the group balancer of a strategy name, for
// configuration files: "average" (kafka-go's RangeGroupBalancer: each
// member a contiguous range of every topic's partitions), "round-robin"
// (kafka-go's RoundRobinGroupBalancer), both handed the partitions in
// order and keyed on member ids, or "consistent-hash", "static" and "rack",
// which key on cfg.Member. An unknown name, or a config the strategy
// cannot work with, is an error wrapping ErrUnknownStrategy or naming the
// field.
func BalancerByName(name string, cfg BalancerConfig) (kafka.GroupBalancer, error) {
	switch name {
	case StrategyAverage:
		return inOrder{kafka.RangeGroupBalancer{}}, nil
	case StrategyRoundRobin:
		return inOrder{kafka.RoundRobinGroupBalancer{}}, nil
	case StrategyConsistentHash:
		if cfg.VirtualNodes < 0 {
			return nil, fmt.Errorf("consumer: strategy %s: negative VirtualNodes %d", name, cfg.VirtualNodes)
		}
		return ConsistentHashBalancer{Member: cfg.Member, VirtualNodes: cfg.VirtualNodes}, nil
	case StrategyStatic:
		if len(cfg.Static) == 0 {
			return nil, fmt.Errorf("consumer: strategy %s: empty Static map", name)
		}
		return StaticBalancer{Member: cfg.Member, Assignments: cfg.Static}, nil
	case StrategyRack:
		if cfg.Rack == "" {
			return nil, fmt.Errorf("consumer: strategy %s: empty Rack", name)
		}
		return RackBalancer{Member: cfg.Member, Rack: cfg.Rack, PartitionRacks: cfg.PartitionRacks}, nil
	}
	return nil, fmt.Errorf("%w %q; want one of %s", ErrUnknownStrategy, name,
		strings.Join([]string{StrategyAverage, StrategyRoundRobin, StrategyConsistentHash, StrategyStatic, StrategyRack}, ", "))
}

// inOrder hands a kafka-go balancer the partitions sorted by topic and id.
// kafka-go's range and round-robin balancers deal partitions in the order
// the broker's metadata lists them, which Kafka does not promise (kfake
// lists them in random order): sorted, the "average" strategy's ranges are
// contiguous, and partition n of every topic goes to the same member, as
// co-partitioned topics need.
type inOrder struct{ kafka.GroupBalancer }

// AssignGroups implements kafka.GroupBalancer.
func (b inOrder) AssignGroups(members []kafka.GroupMember, partitions []kafka.Partition) kafka.GroupMemberAssignments {
	ps := slices.Clone(partitions)
	slices.SortFunc(ps, func(x, y kafka.Partition) int {
		return cmp.Or(strings.Compare(x.Topic, y.Topic), cmp.Compare(x.ID, y.ID))
	})
	return b.GroupBalancer.AssignGroups(members, ps)
}

// memberInfo is what a member tells the leader in its join metadata.
type memberInfo struct {
	Name       string `json:"name,omitempty"`
	Rack       string `json:"rack,omitempty"`
	Partitions []int  `json:"partitions,omitempty"`
}

func (mi memberInfo) encode() ([]byte, error) {
	b, err := json.Marshal(mi)
	if err != nil {
		return nil, fmt.Errorf("consumer: encode member metadata: %w", err)
	}
	return b, nil
}

// member is a group member as the leader sees it; a member whose metadata
// does not decode (another client) is known by its member id alone.
type member struct {
	id   string
	info memberInfo
}

// groupView sorts members and partitions so that every leader computes the
// same assignment from the same group.
type groupView struct {
	out     kafka.GroupMemberAssignments
	byTopic map[string][]member
	parts   map[string][]kafka.Partition
}

func newGroupView(members []kafka.GroupMember, partitions []kafka.Partition) *groupView {
	v := &groupView{out: kafka.GroupMemberAssignments{}, byTopic: map[string][]member{}, parts: map[string][]kafka.Partition{}}
	for _, gm := range members {
		var mi memberInfo
		if len(gm.UserData) > 0 && json.Unmarshal(gm.UserData, &mi) != nil {
			mi = memberInfo{}
		}
		if mi.Name == "" {
			mi.Name = gm.ID
		}
		v.out[gm.ID] = map[string][]int{}
		for _, t := range gm.Topics {
			v.byTopic[t] = append(v.byTopic[t], member{id: gm.ID, info: mi})
		}
	}
	for t, ms := range v.byTopic {
		sort.Slice(ms, func(i, j int) bool {
			if ms[i].info.Name != ms[j].info.Name {
				return ms[i].info.Name < ms[j].info.Name
			}
			return ms[i].id < ms[j].id
		})
		v.byTopic[t] = ms
	}
	for _, p := range partitions {
		if _, ok := v.byTopic[p.Topic]; ok {
			v.parts[p.Topic] = append(v.parts[p.Topic], p)
		}
	}
	for t, ps := range v.parts {
		sort.Slice(ps, func(i, j int) bool { return ps[i].ID < ps[j].ID })
		v.parts[t] = ps
	}
	return v
}

func (v *groupView) assign(memberID, topic string, partition int) {
	v.out[memberID][topic] = append(v.out[memberID][topic], partition)
}

// topics returns the subscribed topics in order, for deterministic loops.
func (v *groupView) topics() []string {
	ts := make([]string, 0, len(v.parts))
	for t := range v.parts {
		ts = append(ts, t)
	}
	sort.Strings(ts)
	return ts
}

// averageInto gives ms contiguous ranges of ps, the first len(ps)%len(ms)
// members one partition more (RocketMQ's AllocateMessageQueueAveragely).
func (v *groupView) averageInto(topic string, ms []member, ps []int) {
	n := len(ms)
	if n == 0 {
		return
	}
	base, extra := len(ps)/n, len(ps)%n
	start := 0
	for i, m := range ms {
		size := base
		if i < extra {
			size++
		}
		for _, p := range ps[start : start+size] {
			v.assign(m.id, topic, p)
		}
		start += size
	}
}

// ConsistentHashBalancer places members on a hash ring by name, with
// VirtualNodes points each, and gives each partition to the first member
// point after the partition's hash. When a member joins or leaves, only
// the partitions next to its points move. Balance is statistical: with few
// partitions a member may get none.
type ConsistentHashBalancer struct {
	// Member is this member's name (see BalancerConfig.Member).
	Member string
	// VirtualNodes is the number of ring points per member (default 64).
	VirtualNodes int
}

// ProtocolName implements kafka.GroupBalancer.
func (ConsistentHashBalancer) ProtocolName() string { return "txmsg-consistent-hash" }

// UserData implements kafka.GroupBalancer.
func (b ConsistentHashBalancer) UserData() ([]byte, error) {
	return memberInfo{Name: b.Member}.encode()
}

type ringPoint struct {
	hash uint64
	id   string
}

// AssignGroups implements kafka.GroupBalancer.
func (b ConsistentHashBalancer) AssignGroups(members []kafka.GroupMember, partitions []kafka.Partition) kafka.GroupMemberAssignments {
	vnodes := b.VirtualNodes
	if vnodes <= 0 {
		vnodes = 64
	}
	v := newGroupView(members, partitions)
	for _, t := range v.topics() {
		var ring []ringPoint
		for _, m := range v.byTopic[t] {
			for i := 0; i < vnodes; i++ {
				ring = append(ring, ringPoint{hash: hash64(fmt.Sprintf("%s#%d", m.info.Name, i)), id: m.id})
			}
		}
		sort.Slice(ring, func(i, j int) bool {
			if ring[i].hash != ring[j].hash {
				return ring[i].hash < ring[j].hash
			}
			return ring[i].id < ring[j].id
		})
		for _, p := range v.parts[t] {
			h := hash64(fmt.Sprintf("%s/%d", t, p.ID))
			i := sort.Search(len(ring), func(i int) bool { return ring[i].hash >= h })
			if i == len(ring) {
				i = 0
			}
			v.assign(ring[i].id, t, p.ID)
		}
	}
	return v.out
}

// hash64 is FNV-1a with a final avalanche (splitmix64's), so that similar
// names spread over the whole ring.
func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// StaticBalancer gives each member the partitions configured for its name
// in every topic (RocketMQ "by config"). Each member sends its own list to
// the leader, so members may carry the same map or only their own entry. A
// partition claimed twice goes to the first claimant by name; partitions
// nobody claims (a configured member is down, or the map misses them) are
// dealt round-robin to the members, so none is left unread.
type StaticBalancer struct {
	// Member is this member's name, its key in Assignments.
	Member string
	// Assignments maps member names to partition numbers.
	Assignments map[string][]int
}

// ProtocolName implements kafka.GroupBalancer.
func (StaticBalancer) ProtocolName() string { return "txmsg-static" }

// UserData implements kafka.GroupBalancer.
func (b StaticBalancer) UserData() ([]byte, error) {
	return memberInfo{Name: b.Member, Partitions: b.Assignments[b.Member]}.encode()
}

// AssignGroups implements kafka.GroupBalancer.
func (StaticBalancer) AssignGroups(members []kafka.GroupMember, partitions []kafka.Partition) kafka.GroupMemberAssignments {
	v := newGroupView(members, partitions)
	for _, t := range v.topics() {
		ms := v.byTopic[t]
		owned := map[int]bool{}
		exists := map[int]bool{}
		for _, p := range v.parts[t] {
			exists[p.ID] = true
		}
		for _, m := range ms {
			for _, p := range m.info.Partitions {
				if exists[p] && !owned[p] {
					owned[p] = true
					v.assign(m.id, t, p)
				}
			}
		}
		i := 0
		for _, p := range v.parts[t] {
			if !owned[p.ID] {
				v.assign(ms[i%len(ms)].id, t, p.ID)
				i++
			}
		}
		for _, m := range ms {
			slices.Sort(v.out[m.id][t])
		}
	}
	return v.out
}

// RackBalancer prefers members in the partition's rack or machine room
// (RocketMQ "machine room nearby"): the partitions of a rack that has
// members are averaged over those members; partitions of racks without
// members are averaged over all members. A partition's rack comes from
// the leader's PartitionRacks, else from its leader broker's rack.
//
// It differs from kafka-go's RackAffinityGroupBalancer in three ways, which
// is why it exists: PartitionRacks places partitions in racks where
// brokers carry no rack, or where a partition's data is served from
// another room than its leader's; members are ordered by their stable
// name, so a restarted member (with a new member id) gets its partitions
// back; and every partition of a
// rack that has members stays in that rack, where kafka-go's caps each
// member at an even share and sends the rest across racks.
type RackBalancer struct {
	// Member is this member's name (see BalancerConfig.Member).
	Member string
	// Rack is this member's rack.
	Rack string
	// PartitionRacks maps partitions to racks (used by the group leader).
	PartitionRacks map[int]string
}

// ProtocolName implements kafka.GroupBalancer.
func (RackBalancer) ProtocolName() string { return "txmsg-rack" }

// UserData implements kafka.GroupBalancer.
func (b RackBalancer) UserData() ([]byte, error) {
	return memberInfo{Name: b.Member, Rack: b.Rack}.encode()
}

// AssignGroups implements kafka.GroupBalancer.
func (b RackBalancer) AssignGroups(members []kafka.GroupMember, partitions []kafka.Partition) kafka.GroupMemberAssignments {
	v := newGroupView(members, partitions)
	for _, t := range v.topics() {
		ms := v.byTopic[t]
		byRack := map[string][]member{}
		for _, m := range ms {
			if m.info.Rack != "" {
				byRack[m.info.Rack] = append(byRack[m.info.Rack], m)
			}
		}
		local := map[string][]int{}
		var rest []int
		for _, p := range v.parts[t] {
			rack, ok := b.PartitionRacks[p.ID]
			if !ok {
				rack = p.Leader.Rack
			}
			if rack != "" && len(byRack[rack]) > 0 {
				local[rack] = append(local[rack], p.ID)
			} else {
				rest = append(rest, p.ID)
			}
		}
		racks := make([]string, 0, len(local))
		for r := range local {
			racks = append(racks, r)
		}
		sort.Strings(racks)
		for _, r := range racks {
			v.averageInto(t, byRack[r], local[r])
		}
		v.averageInto(t, ms, rest)
		for _, m := range ms {
			slices.Sort(v.out[m.id][t])
		}
	}
	return v.out
}

// defaultMemberName is the host name and a random suffix.
func defaultMemberName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "consumer"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

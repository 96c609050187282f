package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/txmsg/txmsg/internal/testenv"
)

// fakeGroup builds members named by names (ids "id-<name>") on topic, with
// the UserData each one's balancer would send.
func fakeGroup(t *testing.T, topic string, mk func(name string) kafka.GroupBalancer, names ...string) []kafka.GroupMember {
	t.Helper()
	var out []kafka.GroupMember
	for _, n := range names {
		ud, err := mk(n).UserData()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, kafka.GroupMember{ID: "id-" + n, Topics: []string{topic}, UserData: ud})
	}
	return out
}

func fakePartitions(topic string, n int) []kafka.Partition {
	ps := make([]kafka.Partition, n)
	for i := range ps {
		ps[i] = kafka.Partition{Topic: topic, ID: i}
	}
	return ps
}

// byName turns an assignment by member id into one by member name.
func byName(a kafka.GroupMemberAssignments, topic string) map[string][]int {
	out := map[string][]int{}
	for id, topics := range a {
		ps := append([]int{}, topics[topic]...)
		sort.Ints(ps)
		out[id[len("id-"):]] = ps
	}
	return out
}

var rackParts = map[int]string{0: "a", 1: "a", 2: "a", 3: "b", 4: "b", 5: "b"}

var memberRacks = map[string]string{"m1": "a", "m2": "b", "m3": "b", "m4": "c"}

var staticMap = map[string][]int{"m1": {5}, "m2": {0, 1}, "m3": {2, 3, 4}}

// strategies builds each strategy's balancer for a member name, as the
// live test's members configure it.
var strategies = map[string]func(name string) BalancerConfig{
	StrategyAverage:        func(n string) BalancerConfig { return BalancerConfig{Member: n} },
	StrategyRoundRobin:     func(n string) BalancerConfig { return BalancerConfig{Member: n} },
	StrategyConsistentHash: func(n string) BalancerConfig { return BalancerConfig{Member: n} },
	StrategyStatic:         func(n string) BalancerConfig { return BalancerConfig{Member: n, Static: staticMap} },
	StrategyRack: func(n string) BalancerConfig {
		return BalancerConfig{Member: n, Rack: memberRacks[n], PartitionRacks: rackParts}
	},
}

// wantThree is each strategy's assignment of 6 partitions to m1, m2, m3
// (members with ids id-m1, id-m2, id-m3: kafka-go's strategies, average
// and round-robin, order members by id).
var wantThree = map[string]map[string][]int{
	StrategyAverage:    {"m1": {0, 1}, "m2": {2, 3}, "m3": {4, 5}},
	StrategyRoundRobin: {"m1": {0, 3}, "m2": {1, 4}, "m3": {2, 5}},
	StrategyStatic:     {"m1": {5}, "m2": {0, 1}, "m3": {2, 3, 4}},
	StrategyRack:       {"m1": {0, 1, 2}, "m2": {3, 4}, "m3": {5}},
}

// wantThreeByName is wantThree for the strategies that key on member names
// and so assign the same by name in a live group.
var wantThreeByName = map[string]map[string][]int{
	StrategyStatic: wantThree[StrategyStatic],
	StrategyRack:   wantThree[StrategyRack],
}

func balancerFor(t testing.TB, strategy, name string) kafka.GroupBalancer {
	t.Helper()
	b, err := BalancerByName(strategy, strategies[strategy](name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConsumerBalancerAssignments(t *testing.T) {
	t.Parallel()
	cases := []struct {
		strategy   string
		partitions int
		members    []string
		want       map[string][]int
	}{
		{StrategyAverage, 6, []string{"m3", "m1", "m2"}, wantThree[StrategyAverage]},
		{StrategyAverage, 8, []string{"m1", "m2", "m3"}, map[string][]int{"m1": {0, 1}, "m2": {2, 3, 4}, "m3": {5, 6, 7}}},
		{StrategyAverage, 2, []string{"m1", "m2", "m3"}, map[string][]int{"m1": {}, "m2": {0}, "m3": {1}}},
		{StrategyRoundRobin, 6, []string{"m2", "m3", "m1"}, wantThree[StrategyRoundRobin]},
		{StrategyRoundRobin, 7, []string{"m1", "m2"}, map[string][]int{"m1": {0, 2, 4, 6}, "m2": {1, 3, 5}}},
		{StrategyStatic, 6, []string{"m1", "m2", "m3"}, wantThree[StrategyStatic]},
		// m3 down: its partitions are dealt to the others.
		{StrategyStatic, 6, []string{"m1", "m2"}, map[string][]int{"m1": {2, 4, 5}, "m2": {0, 1, 3}}},
		{StrategyRack, 6, []string{"m1", "m2", "m3"}, wantThree[StrategyRack]},
		// No member in rack a: its partitions go to everybody.
		{StrategyRack, 6, []string{"m2", "m3", "m4"}, map[string][]int{"m2": {0, 3, 4}, "m3": {1, 5}, "m4": {2}}},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/%dp/%v", tc.strategy, tc.partitions, tc.members), func(t *testing.T) {
			mk := func(n string) kafka.GroupBalancer { return balancerFor(t, tc.strategy, n) }
			b := mk(tc.members[0])
			got := byName(b.AssignGroups(fakeGroup(t, "t", mk, tc.members...), fakePartitions("t", tc.partitions)), "t")
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("assignment %v, want %v", got, tc.want)
			}
		})
	}
}

// TestConsumerBalancerSortsPartitions: the strategies backed by kafka-go
// assign the same whatever order the metadata lists partitions in.
func TestConsumerBalancerSortsPartitions(t *testing.T) {
	t.Parallel()
	for _, strategy := range []string{StrategyAverage, StrategyRoundRobin} {
		mk := func(n string) kafka.GroupBalancer { return balancerFor(t, strategy, n) }
		ps := fakePartitions("t", 6)
		slices.Reverse(ps)
		got := byName(mk("m1").AssignGroups(fakeGroup(t, "t", mk, "m1", "m2", "m3"), ps), "t")
		if !reflect.DeepEqual(got, wantThree[strategy]) {
			t.Errorf("%s with partitions listed in reverse: assignment %v, want %v", strategy, got, wantThree[strategy])
		}
	}
}

func TestConsumerBalancerConsistentHashMovesFew(t *testing.T) {
	t.Parallel()
	mk := func(n string) kafka.GroupBalancer { return balancerFor(t, StrategyConsistentHash, n) }
	const partitions = 120
	owner := func(names ...string) map[int]string {
		a := byName(mk("x").AssignGroups(fakeGroup(t, "t", mk, names...), fakePartitions("t", partitions)), "t")
		out := map[int]string{}
		for n, ps := range a {
			for _, p := range ps {
				if prev, ok := out[p]; ok {
					t.Fatalf("partition %d assigned to %s and %s", p, prev, n)
				}
				out[p] = n
			}
		}
		if len(out) != partitions {
			t.Fatalf("%d of %d partitions assigned", len(out), partitions)
		}
		return out
	}
	three := owner("m1", "m2", "m3")
	four := owner("m1", "m2", "m3", "m4")
	moved := 0
	for p, n := range four {
		if three[p] != n {
			moved++
			if n != "m4" {
				t.Fatalf("partition %d moved from %s to %s, not to the new member", p, three[p], n)
			}
		}
	}
	// The newcomer takes about a quarter; everything else stays put.
	if moved == 0 || moved > partitions/2 {
		t.Fatalf("%d of %d partitions moved when a fourth member joined", moved, partitions)
	}
	perMember := map[string]int{}
	for _, n := range three {
		perMember[n]++
	}
	for n, c := range perMember {
		if c < partitions/3/2 {
			t.Fatalf("member %s got %d of %d partitions: ring badly unbalanced %v", n, c, partitions, perMember)
		}
	}
}

// TestConsumerBalancerLiveMembers runs three members of each strategy on
// kfake, waits for the group's assignment to be what the strategy computes
// for the live members (and, for the strategies keyed on member names, the
// expected one by name), then checks that every member handles exactly its
// partitions' messages.
func TestConsumerBalancerLiveMembers(t *testing.T) {
	t.Parallel()
	for strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			t.Parallel()
			k := testenv.NewKafka(t, 6)
			const topic, group = "work", "g"
			var msgs []kafka.Message
			for p := 0; p < 6; p++ {
				msgs = append(msgs, kafka.Message{Topic: topic, Partition: p, Value: []byte("x")})
			}
			producePartitions(t, k.Addrs, msgs)
			var mu sync.Mutex
			seen := map[string]map[int]bool{}
			for _, name := range []string{"m1", "m2", "m3"} {
				c, err := New(k.Addrs, group, []string{topic}, fastGroup(), WithStrategy(strategy, strategies[strategy](name)))
				if err != nil {
					t.Fatal(err)
				}
				seen[name] = map[int]bool{}
				start(t, c, HandlerFunc(func(_ context.Context, m Message) error {
					mu.Lock()
					seen[name][m.Partition] = true
					mu.Unlock()
					return nil
				}))
			}
			var assigned [][]int
			testenv.Eventually(t, 30*time.Second, func() error {
				var err error
				assigned, err = checkLiveAssignment(balancerFor(t, strategy, "m1"), k.Addrs, group, topic, wantThreeByName[strategy])
				return err
			})
			// Messages produced now reach each partition's owner.
			mu.Lock()
			for _, s := range seen {
				clear(s)
			}
			mu.Unlock()
			producePartitions(t, k.Addrs, msgs)
			testenv.Eventually(t, 20*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				var handled [][]int
				for _, ps := range seen {
					got := []int{}
					for p := range ps {
						got = append(got, p)
					}
					sort.Ints(got)
					handled = append(handled, got)
				}
				if !reflect.DeepEqual(sortedSets(handled), assigned) {
					return fmt.Errorf("members handled partitions %v, want %v", handled, assigned)
				}
				return nil
			})
		})
	}
}

// producePartitions writes each message to its own Partition.
func producePartitions(t testing.TB, addrs []string, msgs []kafka.Message) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addrs...), Balancer: partitionBalancer{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, AllowAutoTopicCreation: true}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// partitionBalancer sends a message to the partition it names.
type partitionBalancer struct{}

func (partitionBalancer) Balance(m kafka.Message, _ ...int) int { return m.Partition }

// checkLiveAssignment asks the coordinator for the group's assignment,
// once the group is stable with three members, and checks that it is what
// b computes for those members and, when wantByName is set, that members
// named in their metadata got those partitions. It returns the members'
// partition sets, sorted.
func checkLiveAssignment(b kafka.GroupBalancer, addrs []string, group, topic string, wantByName map[string][]int) ([][]int, error) {
	cl := &kafka.Client{Addr: kafka.TCP(addrs...), Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := cl.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return nil, err
	}
	if len(res.Groups) != 1 {
		return nil, fmt.Errorf("%d groups described", len(res.Groups))
	}
	g := res.Groups[0]
	if g.Error != nil || g.GroupState != "Stable" || len(g.Members) != 3 {
		return nil, fmt.Errorf("group state %s, %d members, error %v", g.GroupState, len(g.Members), g.Error)
	}
	var members []kafka.GroupMember
	got := map[string][]int{}
	byName := map[string][]int{}
	for _, m := range g.Members {
		members = append(members, kafka.GroupMember{ID: m.MemberID, Topics: m.MemberMetadata.Topics, UserData: m.MemberMetadata.UserData})
		ps := []int{}
		for _, tp := range m.MemberAssignments.Topics {
			if tp.Topic == topic {
				ps = append(ps, tp.Partitions...)
			}
		}
		sort.Ints(ps)
		got[m.MemberID] = ps
		var mi memberInfo
		if json.Unmarshal(m.MemberMetadata.UserData, &mi) == nil {
			byName[mi.Name] = ps
		}
	}
	want := map[string][]int{}
	for id, topics := range b.AssignGroups(members, fakePartitions(topic, 6)) {
		ps := append([]int{}, topics[topic]...)
		sort.Ints(ps)
		want[id] = ps
	}
	if !reflect.DeepEqual(got, want) {
		return nil, fmt.Errorf("assignment %v, want %v", got, want)
	}
	if wantByName != nil && !reflect.DeepEqual(byName, wantByName) {
		return nil, fmt.Errorf("assignment by name %v, want %v", byName, wantByName)
	}
	var sets [][]int
	for _, ps := range got {
		sets = append(sets, ps)
	}
	return sortedSets(sets), nil
}

// sortedSets sorts sets of partitions, for comparing assignments whose
// members are unknown.
func sortedSets(sets [][]int) [][]int {
	sort.Slice(sets, func(i, j int) bool { return fmt.Sprint(sets[i]) < fmt.Sprint(sets[j]) })
	return sets
}

package api_test

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"
)

// chargePage is one page of a charge list.
type chargePage struct {
	Data    []chargeAnswer `json:"data"`
	HasMore bool           `json:"has_more"`
}

// chargeIDs gets path and returns the ids of its page and has_more.
func chargeIDs(t *testing.T, m tenant, path string) ([]string, bool) {
	t.Helper()
	var p chargePage
	if res := m.c.Get(t, path); !res.WantStatus(t, http.StatusOK) || !res.Decode(t, &p) {
		return nil, false
	}
	out := []string{}
	for _, c := range p.Data {
		out = append(out, c.ID)
	}
	return out, p.HasMore
}

// allChargeIDs walks path's pages of limit rows with starting_after and
// returns every id, checking has_more on each page.
func allChargeIDs(t *testing.T, m tenant, path string, limit int) []string {
	t.Helper()
	var all []string
	after := ""
	for range 100 {
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if after != "" {
			q.Set("starting_after", after)
		}
		ids, more := chargeIDs(t, m, path+"?"+q.Encode())
		all = append(all, ids...)
		if !more {
			return all
		}
		if len(ids) != limit {
			t.Fatalf("%s: a page of %d with has_more, want %d", path, len(ids), limit)
		}
		after = ids[len(ids)-1]
	}
	t.Fatalf("%s: more than 100 pages", path)
	return nil
}

func (e *mandateEnv) testChargeLists(t *testing.T) {
	t.Parallel()
	srv, clk := e.clocked(t)
	m := tenantOf(t, srv, "bind", "withhold")
	mem, one, two := e.memberWithTwoCards(t, srv, m)
	v1 := createMandate(t, m, variableMandate(one.ID))
	confirmMandate(t, srv, m, v1.ID, one.Phone)
	v2 := createMandate(t, m, variableMandate(two.ID))
	confirmMandate(t, srv, m, v2.ID, two.Phone)

	// Four charges a second apart: c[0] the oldest.
	post := func(md mandateAnswer, period string) chargeAnswer {
		t.Helper()
		clk.Advance(time.Second)
		var ch chargeAnswer
		if res := m.c.Post(t, "/v1/mandates/"+md.ID+"/charges", map[string]any{"amount": 100, "period": period}); !res.WantStatus(t, http.StatusCreated) ||
			!res.Decode(t, &ch) {
			t.FailNow()
		}
		return ch
	}
	c := []chargeAnswer{post(v1, "2030-02"), post(v2, "2030-02"), post(v1, "2030-03"), post(v1, "2030-04")}
	idsOf := func(is ...int) []string {
		out := []string{}
		for _, i := range is {
			out = append(out, c[i].ID)
		}
		return out
	}
	// Pausing v2 fails its charge: one failed among scheduled ones.
	m.c.Post(t, "/v1/mandates/"+v2.ID+"/pause", nil).WantStatus(t, http.StatusOK)

	// Another merchant's charge, created last: never in m's lists.
	other := tenantOf(t, srv, "bind", "withhold")
	otherCard := e.bindCard(t, srv, other, "ICBC", "", "")
	om := createMandate(t, other, variableMandate(otherCard.ID))
	confirmMandate(t, srv, other, om.ID, otherCard.Phone)
	clk.Advance(time.Second)
	var oc chargeAnswer
	if res := other.c.Post(t, "/v1/mandates/"+om.ID+"/charges", map[string]any{"amount": 100}); !res.WantStatus(t, http.StatusCreated) ||
		!res.Decode(t, &oc) {
		t.FailNow()
	}

	at := func(ch chargeAnswer) string { return url.QueryEscape(ch.CreatedAt.Format(time.RFC3339Nano)) }
	for _, tc := range []struct {
		query string
		want  []string
		more  bool
	}{
		{"", idsOf(3, 2, 1, 0), false},
		{"status=failed", idsOf(1), false},
		{"status=scheduled", idsOf(3, 2, 0), false},
		{"status=succeeded", idsOf(), false},
		{"mandate_id=" + v1.ID, idsOf(3, 2, 0), false},
		{"mandate_id=" + om.ID, idsOf(), false},
		{"card_id=" + two.ID, idsOf(1), false},
		{"card_id=" + otherCard.ID, idsOf(), false},
		{"member_id=" + mem.ID, idsOf(3, 2, 1, 0), false},
		{"member_id=mem_aaaaaaaaaaaaaaaaaaaaaaaa", idsOf(), false},
		{"created_gte=" + at(c[2]), idsOf(3, 2), false},
		{"created_lt=" + at(c[2]), idsOf(1, 0), false},
		{"created_gte=" + at(c[1]) + "&created_lt=" + at(c[3]), idsOf(2, 1), false},
		{"mandate_id=" + v1.ID + "&status=scheduled&created_lt=" + at(c[3]), idsOf(2, 0), false},
		{"limit=3", idsOf(3, 2, 1), true},
		{"limit=3&starting_after=" + c[1].ID, idsOf(0), false},
		{"status=scheduled&limit=1&starting_after=" + c[3].ID, idsOf(2), true},
		{"starting_after=" + c[0].ID, idsOf(), false},
	} {
		got, more := chargeIDs(t, m, "/v1/charges?"+tc.query)
		if !slices.Equal(got, tc.want) || more != tc.more {
			t.Errorf("GET /v1/charges?%s = %v has_more %v, want %v has_more %v", tc.query, got, more, tc.want, tc.more)
		}
	}

	t.Run("pages of one walk the whole list", func(t *testing.T) {
		if got := allChargeIDs(t, m, "/v1/charges", 1); !slices.Equal(got, idsOf(3, 2, 1, 0)) {
			t.Errorf("pages of 1 = %v, want %v", got, idsOf(3, 2, 1, 0))
		}
		if got := allChargeIDs(t, m, "/v1/mandates/"+v1.ID+"/charges", 2); !slices.Equal(got, idsOf(3, 2, 0)) {
			t.Errorf("v1's charges in pages of 2 = %v, want %v", got, idsOf(3, 2, 0))
		}
	})

	t.Run("a cursor is stable while charges are added", func(t *testing.T) {
		first, more := chargeIDs(t, m, "/v1/charges?mandate_id="+v1.ID+"&limit=2")
		if !slices.Equal(first, idsOf(3, 2)) || !more {
			t.Fatalf("first page = %v has_more %v, want %v and more", first, more, idsOf(3, 2))
		}
		added := post(v1, "2030-05")
		next, more := chargeIDs(t, m, "/v1/charges?mandate_id="+v1.ID+"&limit=2&starting_after="+first[1])
		if !slices.Equal(next, idsOf(0)) || more {
			t.Errorf("next page = %v has_more %v, want %v and no more", next, more, idsOf(0))
		}
		if got, _ := chargeIDs(t, m, "/v1/charges?limit=1"); !slices.Equal(got, []string{added.ID}) {
			t.Errorf("newest = %v, want the added %s", got, added.ID)
		}
	})

	t.Run("another merchant's charges never appear", func(t *testing.T) {
		if got, more := chargeIDs(t, other, "/v1/charges"); !slices.Equal(got, []string{oc.ID}) || more {
			t.Errorf("other merchant's list = %v has_more %v, want only %s", got, more, oc.ID)
		}
		for _, q := range []string{"mandate_id=" + v1.ID, "card_id=" + one.ID, "member_id=" + mem.ID} {
			if got, _ := chargeIDs(t, other, "/v1/charges?"+q); len(got) != 0 {
				t.Errorf("other merchant's list ?%s = %v, want nothing", q, got)
			}
		}
		other.c.Get(t, "/v1/charges?starting_after="+c[2].ID).WantError(t, http.StatusNotFound, "not_found")
		m.c.Get(t, "/v1/charges?starting_after="+oc.ID).WantError(t, http.StatusNotFound, "not_found")
		other.c.Get(t, "/v1/mandates/"+v1.ID+"/charges").WantError(t, http.StatusNotFound, "not_found")
	})

	t.Run("bad parameters are validation_failed naming the parameter", func(t *testing.T) {
		for _, tc := range []struct{ query, field string }{
			{"status=bogus", "status"},
			{"status=active", "status"},
			{"mandate_id=" + one.ID, "mandate_id"},
			{"member_id=x", "member_id"},
			{"card_id=" + mem.ID, "card_id"},
			{"created_gte=yesterday", "created_gte"},
			{"created_lt=2030-01-30", "created_lt"},
			{"limit=0", "limit"},
			{"limit=101", "limit"},
			{"limit=-1", "limit"},
			{"limit=ten", "limit"},
		} {
			wantError(t, m.c.Get(t, "/v1/charges?"+tc.query), http.StatusUnprocessableEntity, "validation_failed", tc.field)
		}
		wantError(t, m.c.Get(t, "/v1/mandates/"+v1.ID+"/charges?limit=500"), http.StatusUnprocessableEntity, "validation_failed", "limit")
		for _, after := range []string{"chg_aaaaaaaaaaaaaaaaaaaaaaaa", v1.ID, "nope"} {
			m.c.Get(t, "/v1/charges?starting_after="+after).WantError(t, http.StatusNotFound, "not_found")
		}
		m.c.Get(t, "/v1/mandates/"+v2.ID+"/charges?starting_after=chg_aaaaaaaaaaaaaaaaaaaaaaaa").WantError(t, http.StatusNotFound, "not_found")
	})
}

package binding_test

import (
	"testing"
	"time"

	"github.com/quickpay/quickpay/binding"
)

func TestValidators(t *testing.T) {
	today := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		ok   bool
		got  bool
	}{
		{"luhn-valid 19 digits", true, binding.ValidPAN("6222029015443424642")},
		{"luhn-valid 16 digits", true, binding.ValidPAN("4392251110366298")},
		{"bad check digit", false, binding.ValidPAN("6222029015443424643")},
		{"12 digits", false, binding.ValidPAN("622202901544")},
		{"letters", false, binding.ValidPAN("62220290154434246a2")},
		{"20 digits", false, binding.ValidPAN("62220290154434246420")},
		{"resident id", true, binding.ValidResidentID("110105199003070017", today)},
		{"resident id lowercase x", true, binding.ValidResidentID("11010519491231002x", today)},
		{"bad check char", false, binding.ValidResidentID("110105199003070018", today)},
		{"unknown province", false, binding.ValidResidentID("990105199003070010", today)},
		{"impossible date", false, binding.ValidResidentID("11010519900230001X", today)},
		{"born in the future", false, binding.ValidResidentID("11010520300101001X", today)},
		{"17 chars", false, binding.ValidResidentID("11010519900307001", today)},
		{"mobile", true, binding.ValidMobile("13800138001")},
		{"mobile 12x", false, binding.ValidMobile("12800138001")},
		{"mobile short", false, binding.ValidMobile("1380013800")},
		{"chinese name", true, binding.ValidName("张三")},
		{"name with middle dot", true, binding.ValidName("欧阳·娜娜")},
		{"latin name", true, binding.ValidName("Zhang San")},
		{"one char", false, binding.ValidName("张")},
		{"31 chars", false, binding.ValidName("张三张三张三张三张三张三张三张三张三张三张三张三张三张三张三张")},
		{"digits in name", false, binding.ValidName("张3")},
		{"expiry this month", true, binding.ValidExpiry("1126", today)},
		{"expiry last month", false, binding.ValidExpiry("1026", today)},
		{"expiry month 13", false, binding.ValidExpiry("1330", today)},
		{"cvv2", true, binding.ValidCVV2("123")},
		{"cvv2 4 digits", false, binding.ValidCVV2("1234")},
		{"otp", true, binding.ValidOTP("012345")},
		{"otp 5 digits", false, binding.ValidOTP("12345")},
	} {
		if tc.ok != tc.got {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.ok)
		}
	}
}

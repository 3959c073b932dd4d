package hosted

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/quickpay/quickpay/binding"
	"github.com/quickpay/quickpay/mandate"
)

// Languages of the page.
const (
	langZH = "zh"
	langEN = "en"
)

// pickLang is English when Accept-Language prefers English to Chinese,
// else Chinese (the default).
func pickLang(accept string) string {
	bestZH, bestEN := -1.0, -1.0
	for _, part := range strings.Split(accept, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		if q <= 0 {
			continue
		}
		base, _, _ := strings.Cut(strings.ToLower(tag), "-")
		switch base {
		case "zh":
			bestZH = max(bestZH, q)
		case "en":
			bestEN = max(bestEN, q)
		}
	}
	if bestEN > bestZH {
		return langEN
	}
	return langZH
}

// texts are the page's words by language; the templates read them as
// {{.T.key}}.
var texts = map[string]map[string]string{
	langZH: {
		"lang": "zh-CN", "title": "绑定银行卡", "for": "为以下商户绑定银行卡：",
		"holderName": "持卡人姓名", "idNumber": "身份证号码", "cardNumber": "银行卡号", "phone": "银行预留手机号",
		"expiry": "有效期（月月年年）", "cvv2": "安全码（卡背面后三位）", "creditOnly": "仅信用卡需填写",
		"next": "获取验证码", "otp": "短信验证码", "otpSent": "银行已向您的预留手机号发送验证码。",
		"confirm": "确认绑卡", "resend": "重新发送", "resendIn": "秒后可重新发送", "attemptsLeft": "剩余尝试次数：",
		"termsTitle": "代扣授权", "payee": "收款方", "amount": "每期金额", "maxAmount": "每期最高金额",
		"schedule": "扣款周期", "firstDate": "首次扣款日", "endDate": "结束日期", "maxCharges": "最多扣款次数",
		"noticeDays": "扣款前通知", "days": "天", "cancel": "如何取消",
		"cancelText": "您可随时联系商户取消本授权；取消后不再扣款。",
		"agree":      "同意并获取授权验证码", "consentCode": "授权验证码", "consentSent": "授权验证码已发送至您的手机。",
		"authorize": "确认授权", "card": "银行卡",
		"expiredTitle": "链接已过期", "expiredText": "此绑卡链接已过期，请返回商户重新发起。",
		"usedTitle": "链接已失效", "usedText": "此绑卡链接已使用，不能再次打开。",
		"notFoundTitle": "链接无效", "notFoundText": "找不到此绑卡链接，请检查链接是否完整。",
		"failedTitle": "绑卡未成功", "failedText": "本次绑卡未成功，请返回商户重新发起。", "back": "返回商户",
		"csrfTitle": "请刷新页面", "csrfText": "页面已失效，请重新打开绑卡链接后再提交。",
		"errorTitle": "出错了", "errorText": "系统暂时无法处理，请稍后再试。",
		"monthly": "每月%d日", "weekly": "每周%s", "none": "无",
		"debit": "借记卡", "credit": "信用卡",
	},
	langEN: {
		"lang": "en", "title": "Link a bank card", "for": "Link a bank card for:",
		"holderName": "Cardholder name", "idNumber": "ID number", "cardNumber": "Card number",
		"phone":  "Phone number registered with the bank",
		"expiry": "Expiry (MMYY)", "cvv2": "Security code (3 digits on the back)", "creditOnly": "Credit cards only",
		"next": "Get code", "otp": "SMS code", "otpSent": "Your bank has texted a code to your registered phone.",
		"confirm": "Link card", "resend": "Send again", "resendIn": "s until you can send again", "attemptsLeft": "Tries left: ",
		"termsTitle": "Direct debit authorization", "payee": "Payee", "amount": "Amount per period",
		"maxAmount": "Maximum per period", "schedule": "Schedule", "firstDate": "First charge", "endDate": "End date",
		"maxCharges": "At most charges", "noticeDays": "Notice before each charge", "days": "days",
		"cancel": "How to cancel", "cancelText": "You can ask the merchant to cancel this authorization at any time; no charge is made after.",
		"agree": "Agree and get the code", "consentCode": "Authorization code", "consentSent": "An authorization code was texted to your phone.",
		"authorize": "Authorize", "card": "Card",
		"expiredTitle": "Link expired", "expiredText": "This link has expired. Go back to the merchant and start again.",
		"usedTitle": "Link used", "usedText": "This link has been used and cannot be opened again.",
		"notFoundTitle": "Invalid link", "notFoundText": "This link was not found. Check that it is complete.",
		"failedTitle": "Card not linked", "failedText": "The card was not linked. Go back to the merchant and start again.",
		"back":      "Back to the merchant",
		"csrfTitle": "Please reload", "csrfText": "This page is no longer valid. Open the link again and resubmit.",
		"errorTitle": "Something went wrong", "errorText": "We could not handle this now. Please try again later.",
		"monthly": "Monthly on day %d", "weekly": "Weekly on %s", "none": "None",
		"debit": "debit card", "credit": "credit card",
	},
}

var weekdays = map[string][]string{
	langZH: {"", "周一", "周二", "周三", "周四", "周五", "周六", "周日"},
	langEN: {"", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"},
}

// fieldNames name the form's fields (and the bank's elements) in sentences.
var fieldNames = map[string]map[string]string{
	langZH: {"holder_name": "持卡人姓名", "id_number": "身份证号码", "card_number": "银行卡号", "phone": "手机号",
		"expiry": "有效期", "cvv2": "安全码", "otp": "验证码", "name": "持卡人姓名"},
	langEN: {"holder_name": "cardholder name", "id_number": "ID number", "card_number": "card number", "phone": "phone number",
		"expiry": "expiry", "cvv2": "security code", "otp": "code", "name": "cardholder name"},
}

func fieldName(lang, field string) string {
	if n, ok := fieldNames[lang][field]; ok {
		return n
	}
	if lang == langEN {
		return "a field"
	}
	return "某项信息"
}

// sentence is the user's-language sentence for a refusal of the domain
// services, and false for an error that is not a refusal (logged, and
// shown as the generic error).
func sentence(lang string, err error) (string, bool) {
	en := lang == langEN
	pick := func(zh, e string) string {
		if en {
			return e
		}
		return zh
	}
	var fe *binding.FieldError
	var mismatch *binding.ElementsMismatchError
	var identity *binding.IdentityMismatchError
	var wrong *binding.OTPIncorrectError
	var soon *binding.ResendTooSoonError
	switch {
	case errors.As(err, &fe):
		f := fieldName(lang, fe.Field)
		switch fe.Field {
		case "expiry", "cvv2":
			return pick("信用卡需要填写正确的"+f+"。", "Credit cards need a valid "+f+"."), true
		default:
			return pick("请填写正确的"+f+"。", "Please enter a valid "+f+"."), true
		}
	case errors.As(err, &mismatch):
		f := fieldName(lang, mismatch.Field)
		return pick("银行核验未通过："+f+"与银行预留信息不符。", "The bank could not verify your "+f+": it differs from the bank's records."), true
	case errors.As(err, &identity):
		f := fieldName(lang, identity.Field)
		return pick(f+"与您在商户处已验证的身份不一致。", "The "+f+" differs from the identity you verified with the merchant."), true
	case errors.As(err, &wrong):
		return pick(fmt.Sprintf("验证码不正确，还可尝试 %d 次。", wrong.AttemptsLeft),
			fmt.Sprintf("The code is incorrect; %d tries left.", wrong.AttemptsLeft)), true
	case errors.As(err, &soon):
		s := int((soon.RetryAfter + 999_999_999) / 1_000_000_000)
		return pick(fmt.Sprintf("请 %d 秒后再重新发送。", s), fmt.Sprintf("Wait %d s before sending again.", s)), true
	case errors.Is(err, binding.ErrOTPAttemptsExceeded):
		return pick("验证码错误次数过多。", "Too many wrong codes."), true
	case errors.Is(err, binding.ErrResendLimit):
		return pick("验证码发送次数已达上限。", "No more codes can be sent."), true
	case errors.Is(err, binding.ErrBindingExpired), errors.Is(err, binding.ErrBindingNotPending):
		return pick("验证码已过期，请重新提交银行卡信息。", "The code has expired. Please submit your card details again."), true
	case errors.Is(err, mandate.ErrConsentExpired):
		return pick("授权验证码已过期，请重新获取。", "The authorization code has expired. Please get a new one."), true
	case errors.Is(err, binding.ErrCardUnsupported):
		return pick("暂不支持此银行卡，请换一张卡。", "This card is not supported. Please use another card."), true
	case errors.Is(err, binding.ErrCardBoundElsewhere):
		return pick("此卡已被其他用户绑定。", "This card is already linked to another user."), true
	case errors.Is(err, binding.ErrCardDeclined):
		return pick("银行拒绝了此卡，请换一张卡。", "The bank refused this card. Please use another card."), true
	case errors.Is(err, binding.ErrBankUnavailable):
		return pick("银行暂时无法响应，请稍后再试。", "The bank did not answer. Please try again."), true
	case errors.Is(err, binding.ErrSessionAttempts):
		return pick("尝试次数过多，请返回商户重新发起。", "Too many attempts. Go back to the merchant and start again."), true
	case errors.Is(err, binding.ErrRateLimited):
		return pick("操作过于频繁，请稍后再试。", "Too many attempts. Please try again later."), true
	case errors.Is(err, mandate.ErrSMSUnavailable):
		return pick("短信暂时无法发送，请稍后再试。", "The text could not be sent. Please try again."), true
	case errors.Is(err, mandate.ErrCardNotActive):
		return pick("此卡已不可用。", "This card is no longer usable."), true
	default:
		return "", false
	}
}

// failureCode is the session's failure_code for an error that ends it:
// the API's code of the refusal.
func failureCode(err error) string {
	switch {
	case errors.Is(err, binding.ErrOTPAttemptsExceeded):
		return "otp_attempts_exceeded"
	case errors.Is(err, binding.ErrSessionAttempts):
		return binding.SessionTooManyAttempts
	case errors.Is(err, mandate.ErrCardNotActive):
		return "card_not_active"
	case errors.Is(err, mandate.ErrInvalid):
		return "validation_failed"
	default:
		return "internal"
	}
}

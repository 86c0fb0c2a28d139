//! APIv3 trade bill CSV (PROTOCOL.md B.11), `bill_type=ALL` layout: the sandbox renders it, the
//! reconciliation job parses it.
//!
//! Layout, as in the files WeChat Pay serves:
//!
//! ```text
//! 交易时间,公众账号ID,…,费率备注                    ← header row (plain text)
//! `2019-06-11 10:00:00,`wx…,…,`                      ← one detail row per trade/refund
//! 总交易单数,应结订单总金额,…,申请退款总金额        ← summary header (plain text)
//! `2,`0.03,…                                          ← summary row
//! ```
//!
//! Every data field is prefixed with a backtick (so spreadsheets keep long numbers as text);
//! amounts are yuan with two decimals and are converted to [`Fen`] exactly, never via floats.
//! Rows end with `\r\n`. Fields containing `,`, `"`, `\r` or `\n` are quoted CSV-style, so any
//! text round-trips. The parser also accepts backtick-prefixed header rows, `\n` line endings, a
//! UTF-8 BOM and blank lines.

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::money::Fen;

/// The 27 column names of the `ALL` trade bill, in order.
pub const TRADE_BILL_HEADER: [&str; 27] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];

/// The 7 column names of the summary row, in order.
pub const TRADE_BILL_SUMMARY_HEADER: [&str; 7] = [
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
];

/// One detail row of the `ALL` trade bill.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TradeBillRow {
    /// 交易时间, `yyyy-MM-dd HH:mm:ss`
    pub trade_time: String,
    /// 公众账号ID
    pub appid: String,
    /// 商户号
    pub mchid: String,
    /// 特约商户号
    pub sub_mchid: String,
    /// 设备号
    pub device_info: String,
    /// 微信订单号
    pub transaction_id: String,
    /// 商户订单号
    pub out_trade_no: String,
    /// 用户标识
    pub openid: String,
    /// 交易类型 (e.g. `APP`)
    pub trade_type: String,
    /// 交易状态 (e.g. `SUCCESS`, `REFUND`)
    pub trade_state: String,
    /// 付款银行
    pub bank_type: String,
    /// 货币种类 (`CNY`)
    pub currency: String,
    /// 应结订单金额
    pub settlement_total: Fen,
    /// 代金券金额
    pub coupon_amount: Fen,
    /// 微信退款单号
    pub refund_id: String,
    /// 商户退款单号
    pub out_refund_no: String,
    /// 退款金额
    pub refund_amount: Fen,
    /// 充值券退款金额
    pub recharge_coupon_refund: Fen,
    /// 退款类型
    pub refund_type: String,
    /// 退款状态
    pub refund_status: String,
    /// 商品名称
    pub body: String,
    /// 商户数据包
    pub attach: String,
    /// 手续费, yuan with up to 5 decimals, kept as text
    pub fee: String,
    /// 费率, e.g. `0.60%`
    pub fee_rate: String,
    /// 订单金额
    pub order_amount: Fen,
    /// 申请退款金额
    pub requested_refund: Fen,
    /// 费率备注
    pub fee_remark: String,
}

/// The summary row of the trade bill.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TradeBillSummary {
    /// 总交易单数
    pub total_count: u64,
    /// 应结订单总金额
    pub settlement_total: Fen,
    /// 退款总金额
    pub refund_total: Fen,
    /// 充值券退款总金额
    pub recharge_coupon_refund_total: Fen,
    /// 手续费总金额, kept as text (up to 5 decimals)
    pub fee_total: String,
    /// 订单总金额
    pub order_total: Fen,
    /// 申请退款总金额
    pub requested_refund_total: Fen,
}

/// A whole trade bill: detail rows and the summary.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TradeBill {
    pub rows: Vec<TradeBillRow>,
    pub summary: TradeBillSummary,
}

fn tick(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    out.push('`');
    out.push_str(s);
    out
}

fn yuan(f: Fen) -> String {
    tick(&f.to_yuan_string())
}

impl TradeBillRow {
    fn to_record(&self) -> [String; 27] {
        [
            tick(&self.trade_time),
            tick(&self.appid),
            tick(&self.mchid),
            tick(&self.sub_mchid),
            tick(&self.device_info),
            tick(&self.transaction_id),
            tick(&self.out_trade_no),
            tick(&self.openid),
            tick(&self.trade_type),
            tick(&self.trade_state),
            tick(&self.bank_type),
            tick(&self.currency),
            yuan(self.settlement_total),
            yuan(self.coupon_amount),
            tick(&self.refund_id),
            tick(&self.out_refund_no),
            yuan(self.refund_amount),
            yuan(self.recharge_coupon_refund),
            tick(&self.refund_type),
            tick(&self.refund_status),
            tick(&self.body),
            tick(&self.attach),
            tick(&self.fee),
            tick(&self.fee_rate),
            yuan(self.order_amount),
            yuan(self.requested_refund),
            tick(&self.fee_remark),
        ]
    }
}

fn write_record<I, S>(w: &mut csv::Writer<Vec<u8>>, record: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    // Writing into a Vec<u8> cannot fail (no I/O); a record that somehow fails is skipped
    // rather than panicking.
    let _ = w.write_record(record);
}

/// Renders the `ALL` layout: header, detail rows, summary header, summary row; backtick-prefixed
/// data fields, yuan with two decimals, `\r\n` line endings.
pub fn render_trade_bill(bill: &TradeBill) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .flexible(true)
        .from_writer(Vec::new());
    write_record(&mut w, TRADE_BILL_HEADER);
    for row in &bill.rows {
        write_record(&mut w, row.to_record());
    }
    write_record(&mut w, TRADE_BILL_SUMMARY_HEADER);
    let s = &bill.summary;
    write_record(
        &mut w,
        [
            tick(&s.total_count.to_string()),
            yuan(s.settlement_total),
            yuan(s.refund_total),
            yuan(s.recharge_coupon_refund_total),
            tick(&s.fee_total),
            yuan(s.order_total),
            yuan(s.requested_refund_total),
        ],
    );
    let bytes = w.into_inner().unwrap_or_default();
    // Only &str went in, so the output is UTF-8.
    String::from_utf8(bytes).unwrap_or_default()
}

fn bad(row: usize, reason: impl Into<String>) -> ProtoError {
    ProtoError::malformed("trade bill", format!("row {row}: {}", reason.into()))
}

fn untick(s: &str) -> &str {
    s.strip_prefix('`').unwrap_or(s)
}

fn is_header(fields: &[String], expected: &[&str]) -> bool {
    fields.len() == expected.len() && fields.iter().zip(expected).all(|(f, e)| f == e)
}

struct Fields<'a> {
    row: usize,
    fields: std::slice::Iter<'a, String>,
    col: usize,
}

impl Fields<'_> {
    fn text(&mut self) -> String {
        self.col += 1;
        self.fields.next().cloned().unwrap_or_default()
    }

    fn fen(&mut self, header: &[&str]) -> Result<Fen, ProtoError> {
        let name = header.get(self.col).copied().unwrap_or("?");
        let v = self.text();
        Fen::parse_yuan(&v).map_err(|e| bad(self.row, format!("column {name}: {e}")))
    }
}

fn parse_row(row: usize, fields: &[String]) -> Result<TradeBillRow, ProtoError> {
    let h: &[&str] = &TRADE_BILL_HEADER;
    let mut f = Fields {
        row,
        fields: fields.iter(),
        col: 0,
    };
    Ok(TradeBillRow {
        trade_time: f.text(),
        appid: f.text(),
        mchid: f.text(),
        sub_mchid: f.text(),
        device_info: f.text(),
        transaction_id: f.text(),
        out_trade_no: f.text(),
        openid: f.text(),
        trade_type: f.text(),
        trade_state: f.text(),
        bank_type: f.text(),
        currency: f.text(),
        settlement_total: f.fen(h)?,
        coupon_amount: f.fen(h)?,
        refund_id: f.text(),
        out_refund_no: f.text(),
        refund_amount: f.fen(h)?,
        recharge_coupon_refund: f.fen(h)?,
        refund_type: f.text(),
        refund_status: f.text(),
        body: f.text(),
        attach: f.text(),
        fee: f.text(),
        fee_rate: f.text(),
        order_amount: f.fen(h)?,
        requested_refund: f.fen(h)?,
        fee_remark: f.text(),
    })
}

fn parse_summary(row: usize, fields: &[String]) -> Result<TradeBillSummary, ProtoError> {
    let h: &[&str] = &TRADE_BILL_SUMMARY_HEADER;
    let mut f = Fields {
        row,
        fields: fields.iter(),
        col: 0,
    };
    let count = f.text();
    let total_count = count
        .parse::<u64>()
        .ok()
        .filter(|_| count.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| bad(row, format!("column 总交易单数: {count:?} is not a count")))?;
    Ok(TradeBillSummary {
        total_count,
        settlement_total: f.fen(h)?,
        refund_total: f.fen(h)?,
        recharge_coupon_refund_total: f.fen(h)?,
        fee_total: f.text(),
        order_total: f.fen(h)?,
        requested_refund_total: f.fen(h)?,
    })
}

/// Parses an `ALL` trade bill (see the module docs). Strips one backtick from every field,
/// converts amounts with [`Fen::parse_yuan`]. Wrong column counts, unknown headers, bad amounts,
/// a missing summary or trailing rows are errors naming the row. Never panics;
/// `parse_trade_bill(&render_trade_bill(b)) == Ok(b)`.
pub fn parse_trade_bill(text: &str) -> Result<TradeBill, ProtoError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());

    #[derive(PartialEq)]
    enum State {
        Header,
        Rows,
        Summary,
        Done,
    }
    let mut state = State::Header;
    let mut rows = Vec::new();
    let mut summary = None;
    for (i, record) in reader.records().enumerate() {
        let n = i + 1;
        let record = record.map_err(|e| bad(n, e.to_string()))?;
        let fields: Vec<String> = record.iter().map(|f| untick(f).to_owned()).collect();
        if fields.iter().all(String::is_empty) && fields.len() <= 1 {
            continue; // blank line
        }
        match state {
            State::Header => {
                if !is_header(&fields, &TRADE_BILL_HEADER) {
                    return Err(bad(n, "expected the ALL trade bill header"));
                }
                state = State::Rows;
            }
            State::Rows => {
                if is_header(&fields, &TRADE_BILL_SUMMARY_HEADER) {
                    state = State::Summary;
                } else if fields.len() == TRADE_BILL_HEADER.len() {
                    rows.push(parse_row(n, &fields)?);
                } else {
                    return Err(bad(
                        n,
                        format!(
                            "expected {} fields, found {}",
                            TRADE_BILL_HEADER.len(),
                            fields.len()
                        ),
                    ));
                }
            }
            State::Summary => {
                if fields.len() != TRADE_BILL_SUMMARY_HEADER.len() {
                    return Err(bad(
                        n,
                        format!(
                            "expected {} summary fields, found {}",
                            TRADE_BILL_SUMMARY_HEADER.len(),
                            fields.len()
                        ),
                    ));
                }
                summary = Some(parse_summary(n, &fields)?);
                state = State::Done;
            }
            State::Done => return Err(bad(n, "unexpected row after the summary")),
        }
    }
    match summary {
        Some(summary) => Ok(TradeBill { rows, summary }),
        None if state == State::Header => Err(ProtoError::malformed("trade bill", "empty")),
        None => Err(ProtoError::malformed("trade bill", "missing summary")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TradeBill {
        let paid = TradeBillRow {
            trade_time: "2019-06-11 10:00:00".into(),
            appid: "wxd930ea5d5a258f4f".into(),
            mchid: "1900000109".into(),
            sub_mchid: "0".into(),
            device_info: String::new(),
            transaction_id: "4200000300201906110000000001".into(),
            out_trade_no: "order-1".into(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            trade_type: "APP".into(),
            trade_state: "SUCCESS".into(),
            bank_type: "OTHERS".into(),
            currency: "CNY".into(),
            settlement_total: Fen::new(29),
            coupon_amount: Fen::ZERO,
            refund_id: "0".into(),
            out_refund_no: "0".into(),
            refund_amount: Fen::ZERO,
            recharge_coupon_refund: Fen::ZERO,
            refund_type: String::new(),
            refund_status: String::new(),
            body: "支付测试, with \"quotes\"".into(),
            attach: "line1\nline2".into(),
            fee: "0.00174".into(),
            fee_rate: "0.60%".into(),
            order_amount: Fen::new(29),
            requested_refund: Fen::ZERO,
            fee_remark: String::new(),
        };
        let refund = TradeBillRow {
            trade_state: "REFUND".into(),
            refund_id: "50000000382019052709732678859".into(),
            out_refund_no: "refund-1".into(),
            refund_amount: Fen::new(10),
            refund_type: "ORIGINAL".into(),
            refund_status: "SUCCESS".into(),
            fee: "-0.00006".into(),
            requested_refund: Fen::new(10),
            ..paid.clone()
        };
        TradeBill {
            rows: vec![paid, refund],
            summary: TradeBillSummary {
                total_count: 2,
                settlement_total: Fen::new(58),
                refund_total: Fen::new(10),
                recharge_coupon_refund_total: Fen::ZERO,
                fee_total: "0.00168".into(),
                order_total: Fen::new(58),
                requested_refund_total: Fen::new(10),
            },
        }
    }

    #[test]
    fn render_layout() {
        let text = render_trade_bill(&sample());
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], TRADE_BILL_HEADER.join(","));
        assert!(lines[1].starts_with("`2019-06-11 10:00:00,`wxd930ea5d5a258f4f,`1900000109,"));
        assert!(
            lines[1].contains(",`0.29,`0.00,"),
            "amounts are yuan with 2 decimals: {}",
            lines[1]
        );
        assert!(
            lines[1].contains(",\"`支付测试, with \"\"quotes\"\"\","),
            "{}",
            lines[1]
        );
        assert!(text.contains(&format!("\r\n{}\r\n", TRADE_BILL_SUMMARY_HEADER.join(","))));
        assert!(
            text.ends_with("\r\n`2,`0.58,`0.10,`0.00,`0.00168,`0.58,`0.10\r\n"),
            "{text}"
        );
    }

    #[test]
    fn round_trip() {
        let b = sample();
        assert_eq!(parse_trade_bill(&render_trade_bill(&b)).unwrap(), b);
        let empty = TradeBill::default();
        assert_eq!(parse_trade_bill(&render_trade_bill(&empty)).unwrap(), empty);
    }

    #[test]
    fn parses_a_hand_written_bill_exactly() {
        let row = "`2019-06-11 10:00:00,`wx1,`1900000109,`0,`,`42000,`o1,`openid,`APP,`SUCCESS,`CMB_CREDIT,\
                   `CNY,`0.29,`0.00,`0,`0,`0.00,`0.00,`,`,`商品,`,`0.00174,`0.60%,`0.29,`0.00,`";
        let text = format!(
            "\u{feff}`{}\n{row}\n\n`{}\n`1,`0.29,`0.00,`0.00,`0.00174,`0.29,`0.00\n",
            TRADE_BILL_HEADER.join(",`"),
            TRADE_BILL_SUMMARY_HEADER.join(",`"),
        );
        let b = parse_trade_bill(&text).unwrap();
        assert_eq!(b.rows.len(), 1);
        // The float recipe would give 28 fen here.
        assert_eq!(b.rows[0].settlement_total, Fen::new(29));
        assert_eq!(b.rows[0].fee_rate, "0.60%");
        assert_eq!(b.summary.total_count, 1);
        assert_eq!(b.summary.order_total, Fen::new(29));
    }

    #[test]
    fn rejections() {
        let good = render_trade_bill(&sample());
        let cases = [
            ("", "empty"),
            ("a,b,c\r\n", "header"),
            (&good.replace(",`0.29,", ",`0.291,"), "precision"),
            (&good.replace(",`0.29,", ",`abc,"), "amount"),
            (&good.replace("`2,`0.58", "`x,`0.58"), "count"),
            (&good.replace("`2,`0.58", "`+2,`0.58"), "count sign"),
            (&format!("{good}`extra\r\n"), "trailing"),
            (good.split("总交易单数").next().unwrap_or(""), "no summary"),
            (&good.replace(",`0.60%,", ","), "short row"),
        ];
        for (text, what) in cases {
            assert!(
                matches!(parse_trade_bill(text), Err(ProtoError::Malformed { .. })),
                "{what} should be rejected"
            );
        }
    }
}

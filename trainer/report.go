package trainer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"io"
	"io/fs"
	"math"
	"os"

	"github.com/iapt-go/iapt/internal/atomicfile"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Record is one line of the metrics log (metrics.jsonl): one per optimizer
// step, with the evaluation fields on the steps that evaluated.
type Record struct {
	Step      int     `json:"step"`
	Epoch     float64 `json:"epoch"`
	TrainLoss float64 `json:"train_loss"`
	// GradNorm is the global gradient norm before clipping, in the
	// optimizer's units (each value's gradient times its learning-rate
	// factor, see lrScales).
	GradNorm     float64 `json:"grad_norm"`
	LR           float64 `json:"lr"`
	TokensPerSec float64 `json:"tokens_per_s"`
	Elapsed      float64 `json:"elapsed_s"`
	// EvalLoss and Metric are set on evaluation steps; Metric only when
	// the run has a task. MetricName names it.
	EvalLoss   *float64 `json:"eval_loss,omitempty"`
	Metric     *float64 `json:"metric,omitempty"`
	MetricName string   `json:"metric_name,omitempty"`
}

// metricsLog appends records to a JSON-lines file, one write per line.
type metricsLog struct {
	path string
	f    *os.File
}

// openMetricsLog opens the log at path for appending. When resuming
// (keepUpTo >= 0) it first drops the records after step keepUpTo (written
// after the checkpoint, by a run that then died); otherwise it starts an
// empty log.
func openMetricsLog(path string, keepUpTo int) (*metricsLog, []Record, error) {
	var kept []Record
	var buf bytes.Buffer
	if keepUpTo >= 0 {
		recs, err := readRecords(path)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range recs {
			if r.Step <= keepUpTo {
				kept = append(kept, r)
				line, _ := json.Marshal(r) // a Record always marshals
				buf.Write(append(line, '\n'))
			}
		}
	}
	if err := writeBytes(path, buf.Bytes()); err != nil {
		return nil, nil, fmt.Errorf("metrics log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics log: %w", err)
	}
	return &metricsLog{path: path, f: f}, kept, nil
}

// readRecords reads a metrics log; a missing file has no records.
func readRecords(path string) ([]Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics log: %w", err)
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("metrics log %s:%d: %v", path, line, err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics log %s: %w", path, err)
	}
	return recs, nil
}

// add appends a record.
func (l *metricsLog) add(r Record) error {
	line, _ := json.Marshal(r) // a Record always marshals
	if _, err := l.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("metrics log %s: %w", l.path, err)
	}
	return nil
}

// Close closes the log file.
func (l *metricsLog) Close() error { return l.f.Close() }

// plotCurves draws the training curves of records into a PNG at path
// (written atomically): training loss (raw, and its moving average over
// smooth steps) and evaluation loss against the step on top; the task
// metric below, when there is one.
func plotCurves(path string, recs []Record, title string) error {
	const smooth = 20
	var train, avg, eval, metric plotter.XYs
	metricLabel := ""
	sum := 0.0
	for i, r := range recs {
		train = append(train, plotter.XY{X: float64(r.Step), Y: r.TrainLoss})
		sum += r.TrainLoss
		if i >= smooth {
			sum -= recs[i-smooth].TrainLoss
		}
		avg = append(avg, plotter.XY{X: float64(r.Step), Y: sum / float64(min(i+1, smooth))})
		if r.EvalLoss != nil {
			eval = append(eval, plotter.XY{X: float64(r.Step), Y: *r.EvalLoss})
		}
		if r.Metric != nil {
			metric = append(metric, plotter.XY{X: float64(r.Step), Y: *r.Metric})
			metricLabel = r.MetricName
		}
	}
	if len(train) == 0 {
		return nil
	}
	losses := plot.New()
	losses.Title.Text = title
	losses.X.Label.Text = "step"
	losses.Y.Label.Text = "loss (response tokens)"
	add := func(p *plot.Plot, xy plotter.XYs, label string, c color.Color, width vg.Length, points bool) error {
		if len(xy) == 0 {
			return nil
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return err
		}
		l.Color, l.Width = c, width
		p.Add(l)
		p.Legend.Add(label, l)
		if points {
			s, err := plotter.NewScatter(xy)
			if err != nil {
				return err
			}
			s.Color = c
			p.Add(s)
		}
		return nil
	}
	grey := color.RGBA{R: 190, G: 190, B: 190, A: 255}
	blue := color.RGBA{B: 200, A: 255}
	red := color.RGBA{R: 210, A: 255}
	green := color.RGBA{G: 150, A: 255}
	if err := add(losses, train, "train loss", grey, 1, false); err != nil {
		return err
	}
	if err := add(losses, avg, fmt.Sprintf("train loss, mean of %d steps", smooth), blue, 2, false); err != nil {
		return err
	}
	if err := add(losses, eval, "eval loss", red, 2, true); err != nil {
		return err
	}
	losses.Legend.Top = true
	rows := [][]*plot.Plot{{losses}}
	height := 4 * vg.Inch
	if len(metric) > 0 {
		mp := plot.New()
		mp.X.Label.Text = "step"
		mp.Y.Label.Text = metricLabel
		mp.Y.Min, mp.Y.Max = 0, 1
		if err := add(mp, metric, metricLabel+" (eval)", green, 2, true); err != nil {
			return err
		}
		mp.Legend.Top = true
		rows = append(rows, []*plot.Plot{mp})
		height = 7 * vg.Inch
	}
	img := vgimg.New(8*vg.Inch, height)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(rows), Cols: 1, PadX: vg.Millimeter, PadY: 3 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canvases := plot.Align(rows, tiles, dc)
	for i := range rows {
		rows[i][0].Draw(canvases[i][0])
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w)
		return err
	})
}

// finite returns a pointer to v, or nil when v is NaN or infinite (JSON
// has no NaN).
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

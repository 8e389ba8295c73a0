// `rlhf demo` (lib/demo, lib/cli/demo.ts): the gold reward by hand, the simulated raters'
// Bradley-Terry preference rates, the SVG chart's structure, and the command end to end.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t, { Test } from 'tap';

import { svgPlot } from '../lib/demo/plot';
import { goldReward, makeTokenizer, prompts, simulateRaters, vocabulary } from '../lib/demo/task';

const root = path.resolve(__dirname, '..');
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

t.test('goldReward: +1 per positive word, -1 per negative, 0.75 (p - 3)^2 past three positives', (t) => {
  t.equal(goldReward('the cat sat', ''), 0);
  t.equal(goldReward('the cat sat', 'the dog ran on a mat'), 0);
  t.equal(goldReward('the cat sat', 'good'), 1);
  t.equal(goldReward('the cat sat', 'great nice fine'), 3, 'three positive words are free');
  t.equal(goldReward('the cat sat', 'bad awful poor'), -3);
  t.equal(goldReward('the cat sat', 'good dog and bad cat'), 0);
  t.equal(goldReward('the cat sat', 'good great nice fine'), 4 - 0.75, 'the fourth costs 0.75');
  t.equal(goldReward('the cat sat', 'good good good good good good'), 6 - 0.75 * 9);
  t.equal(goldReward('the cat sat', 'good great nice fine good great nice fine'), 8 - 0.75 * 25, 'all praise scores below 0');
  t.equal(goldReward('the cat sat', 'good great nice fine bad'), 4 - 1 - 0.75);
  t.equal(goldReward('the cat sat', '  GOOD   <unk> good  '), 2, 'case and spacing do not matter; unknown tokens count 0');
  t.end();
});

t.test('the vocabulary, tokenizer and prompts', (t) => {
  const tok = makeTokenizer();
  t.equal(vocabulary.length, 16);
  t.equal(tok.vocabSize, 19, '16 words and the 3 reserved ids');
  const ps = prompts(7, 50);
  t.same(ps, prompts(7, 50), 'seeded');
  t.not(ps.join('|'), prompts(8, 50).join('|'));
  t.ok(ps.every((p) => p.split(' ').length === 3), 'three words each');
  t.ok(ps.every((p) => goldReward('', p) === 0), 'neutral');
  t.ok(ps.every((p) => !Array.from(tok.encode(p)).includes(1)), 'no unknown ids');
  t.end();
});

t.test('simulated raters prefer A over B with probability sigmoid((gold(A) - gold(B)) / temperature)', (t) => {
  const n = 4000;
  const cases = [
    { a: 'good', b: 'the cat', temperature: 1 },                  // gold 1 vs 0
    { a: 'good great nice', b: 'bad', temperature: 1 },           // 3 vs -1
    { a: 'good great nice fine good', b: 'dog', temperature: 1 }, // 2 vs 0
    { a: 'the', b: 'mat', temperature: 1 },                       // a tie: a coin flip
    { a: 'good', b: 'the cat', temperature: 0.5 },
  ];
  for (const c of cases) {
    const ps = prompts(3, n);
    const pairs = simulateRaters({ prompts: ps, completionsPerPrompt: 2, samples: (asked) => asked.map((_, i) => (i % 2 === 0 ? c.a : c.b)),
      seed: 11, temperature: c.temperature });
    t.equal(pairs.length, n);
    t.ok(pairs.every((p, i) => p.prompt === ps[i] && new Set([p.chosen, p.rejected]).size === 2), 'one pair per prompt, of its two completions');
    const p = sigmoid((goldReward('', c.a) - goldReward('', c.b)) / c.temperature);
    const rate = pairs.filter((q) => q.chosen === c.a).length / n;
    const sigma = Math.sqrt((p * (1 - p)) / n);
    t.ok(Math.abs(rate - p) < 4 * sigma, `'${c.a}' over '${c.b}' (T ${c.temperature}): ${rate.toFixed(4)} vs ${p.toFixed(4)} +- ${(4 * sigma).toFixed(4)}`);
  }
  t.end();
});

t.test('simulated raters: every two completions of a prompt make a pair; bad options are named', (t) => {
  const pairs = simulateRaters({ prompts: ['the cat sat', 'a dog ran'], completionsPerPrompt: 3, samples: (asked) => asked.map((p, i) => `${p} ${i}`), seed: 1 });
  t.equal(pairs.length, 6, '3 choose 2 per prompt');
  t.same(pairs.map((p) => p.prompt), ['the cat sat', 'the cat sat', 'the cat sat', 'a dog ran', 'a dog ran', 'a dog ran']);
  t.same(simulateRaters({ prompts: prompts(1, 20), samples: (a) => a.map((_, i) => String(i)), seed: 5 }),
    simulateRaters({ prompts: prompts(1, 20), samples: (a) => a.map((_, i) => String(i)), seed: 5 }), 'seeded');
  t.throws(() => simulateRaters({ prompts: ['x'], samples: () => ['only one'], seed: 1 }), { name: 'RangeError', message: /simulateRaters: `samples` must return one completion per prompt \(2\)/ });
  t.throws(() => simulateRaters({ prompts: ['x'], completionsPerPrompt: 1, samples: (a) => a, seed: 1 }), { name: 'RangeError', message: /`completionsPerPrompt` must be an integer >= 2/ });
  t.throws(() => simulateRaters({ prompts: ['x'], samples: (a) => a, seed: 1, temperature: 0 }), { name: 'RangeError', message: /`temperature`/ });
  t.end();
});

/** What a regex can tell of an SVG document: one root, balanced tags, escaped text, no outside resources. */
function checkSvg(t: Test, svg: string): void {
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]*>/, 'starts with the <svg> root');
  t.match(svg.trimEnd(), /<\/svg>$/, 'ends with it');
  t.equal(svg.match(/<svg\b/g)?.length, 1, 'one <svg>');
  t.notMatch(svg, /<script|@import|url\(|href=/i, 'no scripts or external resources');
  const stack: string[] = [];
  const unbalanced: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)\b[^>]*?(\/?)>/g)) {
    if (m[3] === '/') continue;
    if (m[1] === '') stack.push(m[2]);
    else if (stack.pop() !== m[2]) unbalanced.push(m[0]);
  }
  t.same({ unbalanced, open: stack }, { unbalanced: [], open: [] }, 'every element is closed, in order');
  const text = svg.replace(/<[^>]*>/g, '');
  t.notMatch(text, /[<>]|&(?!(amp|lt|gt|quot|apos);)/, 'text is escaped');
  t.notMatch(svg, /NaN|Infinity|undefined/, 'no non-finite coordinates');
}

t.test('svgPlot: a well-formed chart with a path and a legend entry per series', (t) => {
  const svg = svgPlot({
    title: 'learned <vs> gold & "more"', xLabel: 'step', yLabel: 'reward',
    series: [
      { name: 'learned', color: '#1f77b4', points: [[1, 0.5], [2, 1.5], [3, 2.5], [4, 3]] },
      { name: 'gold', color: '#d62728', points: [[1, 0.4], [2, NaN], [3, -1], [4, -2]] },
    ],
  });
  checkSvg(t, svg);
  t.equal(svg.match(/<path class="series"/g)?.length, 2, 'a path per series');
  t.match(svg, /learned &lt;vs&gt; gold &amp; &quot;more&quot;/, 'the title is escaped');
  t.notMatch(svg, /learned <vs>/);
  t.match(svg, />learned<\/text>/, 'legend: learned');
  t.match(svg, />gold<\/text>/, 'legend: gold');
  t.match(svg, />step<\/text>/, 'x label');
  t.match(svg, />reward<\/text>/, 'y label');
  const gold = svg.match(/<path class="series" d="([^"]*)" fill="none" stroke="#d62728"/);
  t.ok(gold, 'the gold path');
  t.equal(gold?.[1].match(/M/g)?.length, 1, 'the NaN point breaks the line: the run of 2 finite points is a line, the single point before it a dot');
  t.match(svg, /<circle [^>]*fill="#d62728"/);
  t.ok((svg.match(/<text [^>]*text-anchor="end">/g)?.length ?? 0) >= 3, 'y ticks');
  t.end();
});

t.test('svgPlot: a single point, an empty series and a flat line still make a chart', (t) => {
  const one = svgPlot({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'one', color: 'red', points: [[5, 2]] }] });
  checkSvg(t, one);
  t.match(one, /<circle /, 'the single point is drawn as a dot');
  const empty = svgPlot({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'none', color: 'red', points: [[NaN, 1]] }] });
  checkSvg(t, empty);
  t.match(empty, />none<\/text>/);
  const flat = svgPlot({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 'flat', color: 'red', points: [[0, 0], [1, 0], [2, 0]] }] });
  checkSvg(t, flat);
  t.end();
});

// The command runs from dist/, which holds the trainer only once it is written and compiled.
const cli = path.join(root, 'dist', 'cli', 'rlhf.js');
const unbuilt = ['trainers/rlhf-ppo.js', 'cli/demo.js'].filter((f) => !fs.existsSync(path.join(root, 'dist', f)));
const skipCli = unbuilt.length > 0 ? `dist/${unbuilt.join(', dist/')} not built yet (npx tsc -p tsconfig.json)` : false;

t.test('rlhf demo --quick writes the summary and the plot', { skip: skipCli }, (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rlhf-demo-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const summaryFile = path.join(dir, 'summary.json'), plotFile = path.join(dir, 'plot.svg');
  const r = spawnSync(process.execPath, [cli, 'demo', '--quick', '--summary', summaryFile, '--plot', plotFile], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 0, `exit status (stderr: ${r.stderr})`);
  t.match(r.stdout, /held-out accuracy/);
  t.match(r.stdout, /\[#+\.*\] +\d+%/, 'progress bars');
  const summary = JSON.parse(fs.readFileSync(summaryFile, 'utf8'));
  t.same(Object.keys(summary).sort(), ['goldAfter', 'goldBefore', 'kl', 'plot', 'rmAccuracy', 'seconds']);
  for (const k of ['goldBefore', 'goldAfter', 'rmAccuracy', 'kl', 'seconds']) t.ok(Number.isFinite(summary[k]), `${k} is a number`);
  t.ok(summary.rmAccuracy >= 0 && summary.rmAccuracy <= 1);
  t.equal(summary.plot, plotFile);
  const svg = fs.readFileSync(plotFile, 'utf8');
  checkSvg(t, svg);
  t.equal(svg.match(/<path class="series"/g)?.length, 3, 'learned, gold and its moving mean');

  const help = spawnSync(process.execPath, [cli, 'demo', '--help'], { encoding: 'utf8' });
  t.equal(help.status, 0);
  t.match(help.stdout, /demo +RLHF end to end/);
  const bad = spawnSync(process.execPath, [cli, 'demo', '--stepz', '3'], { encoding: 'utf8' });
  t.equal(bad.status, 1);
  t.match(bad.stderr, /rlhf demo: unknown option --stepz/);
  t.end();
});

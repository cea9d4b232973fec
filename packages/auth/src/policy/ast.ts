/** A parsed rule, with the offset of each node in its source for error messages and explanations. */
export type RuleNode =
  | { type: 'always'; pos: number }
  | { type: 'never'; pos: number }
  | { type: 'role'; role: string; pos: number; text: string }
  | { type: 'rule'; name: string; pos: number; text: string }
  | { type: 'generic'; key: string; match: MatchValue; pos: number; text: string }
  | { type: 'not'; operand: RuleNode; pos: number }
  | { type: 'and'; operands: RuleNode[]; pos: number }
  | { type: 'or'; operands: RuleNode[]; pos: number };

/** The right side of `key:match`: a value from the target, or a literal. */
export type MatchValue = { kind: 'target'; path: string[] } | { kind: 'literal'; value: string | boolean };

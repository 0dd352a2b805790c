/**
 * A dialog body around one of the plain React forms (./scheduleForm, ./deployForm): the
 * form renders in the JupyterLab Dialog, and the Dialog reads the values it last reported.
 */
import { Dialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

/** What such a form takes: its first values, and a callback for each change. */
export interface IFormProps {
  initial: unknown;
  onChange: (values: never) => void;
}

/** The values a form of props ``P`` edits. */
type ValuesOf<P extends IFormProps> = P['initial'];

export class FormBody<P extends IFormProps>
  extends ReactWidget
  implements Dialog.IBodyWidget<ValuesOf<P>>
{
  constructor(
    private readonly form: React.ComponentType<P>,
    private readonly props: Omit<P, 'onChange'>
  ) {
    super();
    this.addClass('shipyard-dialog-body');
    this._values = props.initial;
  }

  getValue(): ValuesOf<P> {
    return this._values;
  }

  render(): React.ReactElement {
    const Form = this.form;
    const onChange = (values: ValuesOf<P>) => (this._values = values);
    // P with its onChange put back: TypeScript cannot see that Omit<P, 'onChange'> plus one is P
    const props = { ...this.props, onChange } as unknown as P;
    return <Form {...props} />;
  }

  private _values: ValuesOf<P>;
}
